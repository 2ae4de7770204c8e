"""Fixtures for console tests: a host with an operator, its HTTP service on a free port."""
import pytest

from postroom.core import records
from postroom.core.console import operators
from tests.support.http import ConsoleClient, running
from tests.support.smtp import SMTPSink

PASSWORD = "correct horse battery"


@pytest.fixture
def sink():
    with SMTPSink() as s:
        yield s


@pytest.fixture
def console(make_host, sink):
    """console(plugins=(...), db_url=None, **config) → (host, base_url); operators ops@
    (admin) and viewer@ (read-only) exist, mail goes to `sink`."""
    started = []

    def factory(plugins=("mail_queue",), extra=(), available=None, db_url=None, **config):
        values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"}
        values.update({k: str(v) for k, v in config.items()})
        host = make_host(plugins=list(plugins), db_url=db_url, config=values, extra=extra, available=available)
        records.ensure_admin(host, "admin@example.com")
        operators.add(host, "ops@example.com", PASSWORD)
        operators.add(host, "viewer@example.com", PASSWORD, role="readonly")
        ctx = running(host)
        url = ctx.__enter__()
        started.append(ctx)
        return host, url
    yield factory
    for ctx in started:
        ctx.__exit__(None, None, None)


@pytest.fixture
def logged_in():
    """logged_in(url, email='ops@example.com') → a ConsoleClient with a live session."""
    def factory(url, email="ops@example.com"):
        client = ConsoleClient(url)
        resp = client.login(email, PASSWORD)
        assert resp.status == 303, resp.text
        return client
    return factory
