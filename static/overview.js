/* Overview: refreshes the page in place from /api/status and draws the charts as inline SVG.
 *
 * Bindings (written by templates/macros.html):
 *   data-field="a.b" data-format="kind"   text of the element = format(status.a.b)
 *   data-hide-empty                       hide the element while the value is null or ""
 *   data-show-field="a.b"                 show the element only while status.a.b is set
 *   data-class-field + data-class-prefix  class = prefix + value (state-running, health-true)
 *   data-progress-field="a.b"             <progress> value
 *   data-list="path" data-template="id"   rows rebuilt from the <template> for each item
 *   data-chart="name"                     an <svg> drawn from status.charts[name]
 * Only textContent and attributes are set: nothing from the server is parsed as HTML.
 */
(function () {
  "use strict";

  var root = document.getElementById("overview");
  if (!root) { return; }
  var SVG = "http://www.w3.org/2000/svg";
  var MISSING = "–";
  var now = Date.now() / 1000;

  function duration(seconds) {  // same text as keepa_deals.health.duration_text
    var s = Math.max(0, Number(seconds));
    if (s < 90) { return s.toFixed(0) + " s"; }
    if (s < 90 * 60) { return (s / 60).toFixed(0) + " min"; }
    if (s < 48 * 3600) { return (s / 3600).toFixed(1) + " h"; }
    return (s / 86400).toFixed(1) + " days";
  }

  var isMissing = function (v) { return v === null || v === undefined; };
  var formats = {  // same kinds as keepa_deals.web.formatting._KINDS
    text: function (v) { return isMissing(v) || v === "" ? MISSING : String(v); },
    int: function (v) { return isMissing(v) ? MISSING : Number(v).toLocaleString("en-US"); },
    money: function (v) {
      return isMissing(v) ? MISSING : "$" + (v / 100).toLocaleString("en-US",
        {minimumFractionDigits: 2, maximumFractionDigits: 2});
    },
    duration: function (v) { return isMissing(v) ? MISSING : duration(v); },
    age: function (v) { return isMissing(v) ? MISSING : duration(v) + " ago"; },
    ago: function (v) {
      if (isMissing(v)) { return MISSING; }
      return now >= v ? duration(now - v) + " ago" : "in " + duration(v - now);
    },
    percent: function (v) { return isMissing(v) ? MISSING : (v * 100).toFixed(1) + "%"; },
    minutes: function (v) { return isMissing(v) ? MISSING : Number(v).toFixed(1) + " min"; },
    hours: function (v) {  // six significant digits, like Python's "{:g}"
      return isMissing(v) ? MISSING : String(Number(Number(v).toPrecision(6))) + " h";
    },
    alive: function (v) { return v === true ? "alive" : v === false ? "dead" : "unknown"; }
  };

  function lookup(data, path) {
    if (path === "") { return data; }
    return path.split(".").reduce(function (value, key) {
      return isMissing(value) ? undefined : value[key];
    }, data);
  }

  function outsideLists(scope, selector) {
    return Array.prototype.filter.call(scope.querySelectorAll(selector), function (el) {
      var list = el.closest("[data-list]");  // list rows are bound item by item
      return !list || list === scope || !scope.contains(list);
    });
  }

  function bindValues(scope, data) {
    outsideLists(scope, "[data-field]").forEach(function (el) {
      var value = lookup(data, el.dataset.field);
      var format = formats[el.dataset.format] || formats.text;
      el.textContent = format(value);
      if (el.hasAttribute("data-hide-empty")) { el.hidden = isMissing(value) || value === ""; }
    });
    outsideLists(scope, "[data-show-field]").forEach(function (el) {
      var value = lookup(data, el.dataset.showField);
      el.hidden = isMissing(value) || value === "";
    });
    outsideLists(scope, "[data-class-field]").forEach(function (el) {
      var prefix = el.dataset.classPrefix;
      Array.prototype.slice.call(el.classList).forEach(function (name) {
        if (name.indexOf(prefix) === 0) { el.classList.remove(name); }
      });
      el.classList.add(prefix + String(lookup(data, el.dataset.classField)).toLowerCase());
    });
    outsideLists(scope, "[data-progress-field]").forEach(function (el) {
      el.value = Number(lookup(data, el.dataset.progressField)) || 0;
    });
  }

  function bindLists(data) {
    document.querySelectorAll("[data-list]").forEach(function (container) {
      var items = lookup(data, container.dataset.list) || [];
      var template = document.getElementById(container.dataset.template);
      var rows = items.map(function (item) {
        var row = template.content.firstElementChild.cloneNode(true);
        bindValues(row, item);
        return row;
      });
      if (!rows.length && container.dataset.empty) {
        var empty = document.createElement("tr");
        var cell = document.createElement("td");
        empty.className = "empty";
        cell.colSpan = template.content.firstElementChild.children.length;
        cell.textContent = container.dataset.empty;
        empty.appendChild(cell);
        rows.push(empty);
      }
      container.replaceChildren.apply(container, rows);
    });
  }

  // --- charts ------------------------------------------------------------------------------

  var CHART_W = 320, CHART_H = 140, PAD_L = 44, PAD_B = 18, PAD_T = 8, PAD_R = 6;
  var COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626"];

  function svgNode(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function when(seconds) {  // an axis label; the current hour's bucket ends after "now"
    return seconds > now - 60 ? "now" : formats.ago(seconds);
  }

  /* series: [{name, points: [[x seconds, y], ...], bars: bool}] */
  function drawChart(svg, series, xStep) {
    svg.setAttribute("viewBox", "0 0 " + CHART_W + " " + CHART_H);
    svg.replaceChildren();
    var points = [].concat.apply([], series.map(function (s) { return s.points; }));
    if (!points.length) {
      svg.appendChild(svgNode("text", {x: CHART_W / 2, y: CHART_H / 2, "text-anchor": "middle",
        "class": "chart-empty"}, "no data yet"));
      return;
    }
    var xs = points.map(function (p) { return p[0]; });
    var ys = points.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs) + (xStep || 0);
    var y0 = Math.min(0, Math.min.apply(null, ys)), y1 = Math.max(1, Math.max.apply(null, ys));
    var w = CHART_W - PAD_L - PAD_R, h = CHART_H - PAD_T - PAD_B;
    var sx = function (x) { return PAD_L + (x1 === x0 ? 0 : (x - x0) / (x1 - x0) * w); };
    var sy = function (y) { return PAD_T + h - (y - y0) / (y1 - y0) * h; };
    svg.appendChild(svgNode("line", {x1: PAD_L, y1: sy(0), x2: CHART_W - PAD_R, y2: sy(0),
      "class": "axis"}));
    svg.appendChild(svgNode("text", {x: PAD_L - 4, y: PAD_T + 8, "text-anchor": "end",
      "class": "tick"}, formats.int(y1)));
    svg.appendChild(svgNode("text", {x: PAD_L - 4, y: sy(y0), "text-anchor": "end",
      "class": "tick"}, formats.int(y0)));
    svg.appendChild(svgNode("text", {x: PAD_L, y: CHART_H - 4, "class": "tick"}, when(x0)));
    svg.appendChild(svgNode("text", {x: CHART_W - PAD_R, y: CHART_H - 4, "text-anchor": "end",
      "class": "tick"}, when(x1)));
    series.forEach(function (s, index) {
      var color = COLORS[index % COLORS.length];
      if (s.bars) {
        var bw = Math.max(1, (xStep ? sx(x0 + xStep) - sx(x0) : w / s.points.length) - 1);
        s.points.forEach(function (p) {
          var top = Math.min(sy(p[1]), sy(0));
          svg.appendChild(svgNode("rect", {x: sx(p[0]), y: top, width: bw,
            height: Math.abs(sy(0) - sy(p[1])), fill: color}, undefined));
        });
      } else {
        var path = s.points.map(function (p, i) {
          return (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1);
        }).join(" ");
        svg.appendChild(svgNode("path", {d: path, fill: "none", stroke: color,
          "stroke-width": 1.5}));
      }
      if (series.length > 1) {
        svg.appendChild(svgNode("text", {x: PAD_L + 4 + index * 120, y: PAD_T + 8,
          fill: color, "class": "legend"}, s.name));
      }
    });
  }

  function drawCharts(charts) {
    var byName = {
      balance: function () {
        return [{name: "balance", points: (charts.balance || []).map(function (p) {
          return [p[0] / 1000, p[1]];
        })}];
      },
      deals_per_hour: function () {
        return [{name: "deals", bars: true, points: charts.deals_per_hour || []}];
      },
      tokens_per_task: function () {
        var tasks = charts.tokens_per_task || {};
        return Object.keys(tasks).sort().map(function (task) {
          return {name: task, points: tasks[task].map(function (p) { return [p[0] * 60, p[1]]; })};
        });
      }
    };
    var steps = {deals_per_hour: 3600};
    document.querySelectorAll("svg[data-chart]").forEach(function (svg) {
      var name = svg.dataset.chart;
      if (byName[name]) { drawChart(svg, byName[name](), steps[name]); }
    });
  }

  // --- refresh -----------------------------------------------------------------------------

  function render(status) {
    now = status.generated_at || Date.now() / 1000;
    bindValues(document, status);
    bindLists(status);
    drawCharts(status.charts || {});
    document.getElementById("refreshed-at").textContent = new Date(now * 1000).toISOString()
      .replace(/\.\d+Z$/, "Z");
  }

  function showRefreshError(message) {
    var el = document.getElementById("refresh-error");
    el.hidden = !message;
    el.textContent = message ? " · refresh failed: " + message : "";
  }

  function refresh() {
    fetch(root.dataset.statusUrl, {headers: {Accept: "application/json"}, cache: "no-store",
                                   credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (status) { render(status); showRefreshError(""); })
      .catch(function (error) { showRefreshError(error.message || String(error)); });
  }

  var initial = document.getElementById("status-data");
  if (initial) { render(JSON.parse(initial.textContent)); }
  window.setInterval(refresh, Number(root.dataset.refreshMs) || 5000);
}());
