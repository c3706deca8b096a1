"""A real PostgreSQL server for tests and benchmarks, started in a temporary directory.

`PostgresServer().start()` runs Debian's `initdb` and `pg_ctl` (installed by `make test`)
on a free loopback port with password authentication. `initdb` refuses to run as root, so as
root the cluster belongs to the unprivileged user `nobody` and the server runs as it. Each
test gets its own database (`create_database()`), cloned from a template when one is named.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from keepa_deals.redis_server import free_port

SUPERUSER = "keepa"
PASSWORD = "pg-secret-Xq7"  # tests assert it never shows in logs or pages
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 60


def postgres_bin_dir() -> Path:
    """The directory of initdb/pg_ctl: Debian's versioned one, else the PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run `make test` (it installs Debian's "
                           "postgresql package) or `apt-get install postgresql`")
    return Path(initdb).parent


class PostgresServer:
    """One PostgreSQL cluster under `root`, on 127.0.0.1 and a free port."""

    def __init__(self, *, durable: bool = False):
        # Its own directory under the system temp dir: pytest's temp dirs are private to root,
        # which `nobody` could not traverse.
        self.root = Path(tempfile.mkdtemp(prefix="keepa-deals-pg-"))
        self.data_dir = self.root / "data"
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self._as_user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        # Tests trade crash safety for speed; benchmarks keep fsync and full-page writes, and
        # commit like SQLite's WAL with synchronous=NORMAL does (no flush wait per commit).
        self._durability = ("-c synchronous_commit=off" if durable else
                            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._created = 0

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        if self._as_user:
            shutil.chown(self.root, self._as_user)
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.root / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            if self._as_user:
                shutil.chown(pwfile, self._as_user)
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile",
                      str(pwfile), "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync")
            pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   f"{self._durability} -c max_connections=200 -c shared_buffers=256MB")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); returns its URL."""
        self._created += 1
        name = f"test_{os.getpid()}_{self._created}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'
                         + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def server_version(self) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0].split()[0]

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([str(self.bin / program), *args], user=self._as_user,
                                cwd=self.root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{result.stderr.strip()[-2000:]}\n{tail}")
