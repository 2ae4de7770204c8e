"""Shared fixtures: a host factory on real databases, a moved clock, the real CLI.

They are `postroom.testing`'s (the pytest plugin Postroom ships for plugin authors, loaded
through its pytest11 entry point) under the short names Postroom's own tests use. Storage
tests take the `db_url` fixture, which runs them on SQLite always and on PostgreSQL when
POSTROOM_TEST_PG_URL names a server database (.ci/run sets it); every PostgreSQL test
gets a database of its own, created and dropped around it.
"""
import pytest

from postroom.core.plugins import hookimpl
from postroom.testing import invoke


@pytest.fixture
def pg_database(postroom_pg_database):
    """A fresh, empty PostgreSQL database URL (dropped afterwards)."""
    return postroom_pg_database


@pytest.fixture
def db_url(postroom_db_url):
    """The database URL for a storage test: SQLite file under tmp_path, or PostgreSQL."""
    return postroom_db_url


@pytest.fixture
def clock(postroom_clock):
    """A clock that tests move forward instead of sleeping."""
    return postroom_clock


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
def make_host(postroom_make_host):
    """make_host(plugins=[...], db_url=None, config={...}, extra=[...], available=None) → an
    opened Host on a fresh database (SQLite under tmp_path unless db_url is given), with
    exactly the named plugins enabled."""
    return postroom_make_host


@pytest.fixture
def cli_run():
    """cli_run(host, *args, input=None) → click Result, through the real CLI."""
    return invoke
