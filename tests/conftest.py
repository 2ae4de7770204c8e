"""Shared fixtures: a host factory on real databases, a moved clock, the real CLI.

Storage tests take the `db_url` fixture, which runs them on SQLite always and on PostgreSQL
when POSTROOM_TEST_PG_URL names a server database (.ci/run sets it); every PostgreSQL test
gets a database of its own, created and dropped around it.
"""
import datetime as dt
import os
import uuid
from urllib.parse import urlparse, urlunparse

import pytest
from click.testing import CliRunner

from postroom.core.clock import UTC, FrozenClock
from postroom.core.config import Config
from postroom.core.host import Host
from postroom.core.plugins import hookimpl

PG_URL = os.environ.get("POSTROOM_TEST_PG_URL")
ENGINES = ["sqlite", "postgresql"]


def _pg_admin(url):
    import psycopg
    p = urlparse(url)
    conn = psycopg.connect(host=p.hostname or "127.0.0.1", port=p.port or 5432,
                           user=p.username or "postgres", dbname=p.path.lstrip("/") or "postgres",
                           autocommit=True)
    return conn


@pytest.fixture
def pg_database():
    """A fresh, empty PostgreSQL database URL (dropped afterwards)."""
    if not PG_URL:
        pytest.skip("POSTROOM_TEST_PG_URL is not set (set by .ci/run when PostgreSQL answers)")
    name = f"postroom_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin(PG_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    p = urlparse(PG_URL)
    yield urlunparse(p._replace(path="/" + name))
    with _pg_admin(PG_URL) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=ENGINES)
def db_url(request, tmp_path):
    """The database URL for a storage test: SQLite file under tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'postroom.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def clock():
    """A clock that tests move forward instead of sleeping."""
    return FrozenClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC))


class Recorder:
    """A plugin that records the hook calls a test wants to assert on."""

    def __init__(self):
        self.calls = []

    def named(self, hook):
        return [kw for name, kw in self.calls if name == hook]

    @hookimpl
    def postroom_message_posted(self, host, message, notified):
        self.calls.append(("postroom_message_posted", {"message_id": message.id, "notified": notified}))

    @hookimpl
    def postroom_record_created(self, host, record, values):
        self.calls.append(("postroom_record_created", {"record_id": record.id, "model": record.model}))


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def make_host(tmp_path, clock):
    """make_host(plugins=[...], db_url=None, config={...}, extra=[...], available=None) → an
    opened Host on a fresh database (SQLite under tmp_path unless db_url is given), with
    exactly the named plugins enabled."""
    hosts = []

    def factory(plugins=(), db_url=None, config=None, extra=(), available=None, clock_=None):
        values = {"database": db_url or f"sqlite:///{tmp_path / 'postroom.db'}",
                  "log_dir": str(tmp_path / "logs"), "domains": "example.com",
                  "cron_time_budget": "30"}
        values.update(config or {})
        cfg_path = tmp_path / "postroom.cfg"
        cfg_path.write_text("[postroom]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
        host = Host(Config.load(str(cfg_path)), clock=clock_ or clock, available=available, extra=extra).open()
        for name in plugins:
            host.enable_plugin(name)
        hosts.append(host)
        return host

    yield factory
    for host in hosts:
        host.close()


@pytest.fixture
def cli_run():
    """cli_run(host, *args, input=None) → click Result, through the real CLI."""
    from postroom.cli import cli

    def run(host, *args, input=None):
        return CliRunner().invoke(cli, [str(a) for a in args], obj=host, input=input, catch_exceptions=False)
    return run
