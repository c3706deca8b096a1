"""/product tokens only where something changed: the enrichment queue and its writes.

A stored deal gets its /product data fetched when it was never enriched ("new"), when its
lastUpdate moved since its enrichment ("changed"), or when its enrichment is older than
ENRICH_MAX_AGE_H ("refresh"), in that order (db.enrichment_queue). An unchanged deal enriched
within that age is never fetched again.

An enrichment writes only the product columns, with enriched_update_at = the lastUpdate it was
fetched for (db.record_enrichment): it never overwrites the prices of a newer page, and a page
that moved lastUpdate meanwhile simply queues the deal again. A deal Keepa returns no usable
product for is recorded as enriched all the same (counted as "unenriched"), so a bad ASIN
cannot hold the head of the queue and burn a token on every batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from keepa_deals import db, deals
from keepa_deals.db import QueuedDeal
from keepa_deals.deals import MalformedRecord
from keepa_deals.task_runtime import TaskRun

log = logging.getLogger(__name__)


def next_batch(run: TaskRun, size: int, *, seen_since: int) -> list[QueuedDeal]:
    """The `size` most urgent deals to enrich among those seen at or after `seen_since`."""
    max_age_s = round(run.services.settings.enrich_max_age_h * 3600)
    return db.enrichment_queue(run.conn, size, stale_before=int(time.time()) - max_age_s,
                               seen_since=seen_since)


def enrich_batch(run: TaskRun, queued: Sequence[QueuedDeal]) -> int:
    """Fetch /product for the queued deals (one call) and commit what it returned; returns
    the tokens the server charged."""
    stored = db.deal_records(run.conn, [item.asin for item in queued])
    targets = [item for item in queued if item.asin in stored]  # the janitor may have run
    if not targets:
        return 0
    products, tokens = run.fetch_products([item.asin for item in targets])
    now = int(time.time())
    enriched = [_enriched(run, stored[item.asin], products.get(item.asin), now)
                for item in targets]
    run.commit_enrichment(enriched, {item.asin: item.last_update_at for item in targets})
    _attribute(run, tokens, Counter(item.reason for item in targets))
    return tokens


def _enriched(run: TaskRun, record: deals.DealRecord, product, now: int) -> deals.DealRecord:
    if product is not None:
        try:
            return deals.enrich(record, product, now=now)
        except MalformedRecord as exc:
            log.warning("%s: product %s malformed, kept unenriched: %s", run.spec.task,
                        record.asin, exc)
    run.count("unenriched")
    return replace(record, enriched_at=now)


def _attribute(run: TaskRun, tokens: int, per_reason: Counter) -> None:
    """Split a call's tokens over its reasons in proportion to their ASINs (runs.detail
    counters tokens_new / tokens_changed / tokens_refresh, and enriched_<reason>)."""
    total = sum(per_reason.values())
    left = tokens
    for n, (reason, count) in enumerate(sorted(per_reason.items())):
        share = left if n == len(per_reason) - 1 else tokens * count // total
        left -= share
        run.count(f"tokens_{reason}", share)
        run.count(f"enriched_{reason}", count)
