"""Fixtures for the scale-out tests: a deployment on a fresh PostgreSQL database with real
`postroom serve` processes, and recording SMTP sinks on loopback (stopped after the workers)."""
import pytest

from tests.support.smtp import smtp_sink  # noqa: F401 - re-exported fixture

from .harness import Deployment


@pytest.fixture
def deployment(pg_database, make_host, tmp_path, smtp_sink):
    """deployment(plugins=[...], **config) → a Deployment on the test's PostgreSQL database.
    Its processes are stopped (and killed if need be) and the database let in again before
    the database is dropped."""
    made = []

    def factory(plugins=("mail_queue",), **config):
        dep = Deployment(make_host, tmp_path, pg_database, list(plugins), config)
        made.append(dep)
        return dep
    yield factory
    for dep in made:
        dep.stop()
        dep.database_away(False)
