"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder.

It listens only on a Unix socket in that folder, never on the network, and is stopped and
deleted when the test session ends. `PostgresServer.start()` returns the server, or a one-line
reason why PostgreSQL tests cannot run here (no server binaries, no psycopg driver).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

ADMIN_USER = "postgres"
# Not UTC on purpose: timestamps must come back in UTC whatever the server's zone is.
SERVER_TIMEZONE = "Pacific/Auckland"
SETTINGS = {
    "listen_addresses": "''",  # Unix socket only
    "fsync": "off",  # a throwaway cluster: speed over durability
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": f"'{SERVER_TIMEZONE}'",
    "max_connections": "60",
}


def _binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl: on PATH, else the newest under /usr/lib/postgresql/*/bin (Debian)."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return on_path  # type: ignore[return-value]
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
        if initdb.exists() and pg_ctl.exists():
            return str(initdb), str(pg_ctl)
    return None


def _major(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


class PostgresServer:
    """A running throwaway cluster; `url(name)` is a SQLAlchemy URL for one of its databases."""

    def __init__(self, root: Path, pg_ctl: str, as_postgres: list[str]) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self._pg_ctl = pg_ctl
        self._as_postgres = as_postgres
        self._names = itertools.count(1)
        self._admin = None
        self._version = 0
        self._template: str | None = None

    @classmethod
    def start(cls) -> PostgresServer | str:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "PostgreSQL tests skipped: the psycopg driver is missing; pip install 'psycopg[binary]' (the postgres extra)"
        binaries = _binaries()
        if binaries is None:
            return "PostgreSQL tests skipped: no initdb/pg_ctl found; install PostgreSQL (apt-get install postgresql)"
        initdb, pg_ctl = binaries
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None or not _user_exists(ADMIN_USER):
                return "PostgreSQL tests skipped: running as root needs runuser and a 'postgres' system user"
            as_postgres = [runuser, "-u", ADMIN_USER, "--"]
        # Short path: a Unix socket's path must stay under about 100 bytes.
        root = Path(tempfile.mkdtemp(prefix="longyarn-pg-", dir="/tmp"))
        if as_postgres:
            shutil.chown(root, user=ADMIN_USER)
        server = cls(root, pg_ctl, as_postgres)
        try:
            server._run(
                initdb, "-D", str(server.data), "-U", ADMIN_USER, "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            )
            with open(server.data / "postgresql.conf", "a") as conf:
                conf.write(f"unix_socket_directories = '{server.socket_dir}'\n")
                conf.writelines(f"{name} = {value}\n" for name, value in SETTINGS.items())
            server._run(
                pg_ctl, "start", "-w", "-t", "60", "-D", str(server.data),
                "-l", str(root / "server.log"),
            )
        except (OSError, subprocess.CalledProcessError) as error:
            log = root / "server.log"
            detail = log.read_text()[-500:] if log.exists() else getattr(error, "stderr", "") or error
            shutil.rmtree(root, ignore_errors=True)
            return f"PostgreSQL tests skipped: the test server did not start ({str(detail).strip()})"
        return server

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as_postgres, *command], check=True, capture_output=True, text=True, timeout=120
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{ADMIN_USER}@/{database}?host={self.socket_dir}"

    def _admin_engine(self):
        if self._admin is None:
            from sqlalchemy import create_engine, text

            self._admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
            with self._admin.connect() as connection:
                self._version = int(connection.scalar(text("SHOW server_version_num")))
        return self._admin

    def create_database(self, *, migrated: bool = False) -> str:
        """A new database with a unique name; returns its URL.

        `migrated`: already at longyarn's newest schema, copied from a template database that
        `open_store` migrated once, which is several times faster than migrating each copy.
        """
        from sqlalchemy import text

        if migrated and self._template is None:
            from longyarn.storage import open_store

            url = self.create_database()
            open_store(url).close()  # no connection may stay open on a template
            self._template = make_url(url).database
        admin = self._admin_engine()
        template = self._template if migrated else "template0"
        # FILE_COPY (PostgreSQL 15+) copies a small template's files faster than it logs them.
        strategy = " STRATEGY FILE_COPY" if migrated and self._version >= 150000 else ""
        name = f"test_{next(self._names)}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}'))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from sqlalchemy import text

        name = make_url(url).database
        with self._admin_engine().connect() as connection:
            # FORCE: a test that failed midway may have left a connection open.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        try:
            self._run(self._pg_ctl, "stop", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
