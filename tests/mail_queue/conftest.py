"""Fixtures for mail_queue tests: a host whose default server is a loopback sink."""
import pytest

from core import records
from tests.support.smtp import SMTPSink, smtp_sink  # noqa: F401 - re-exported fixture


@pytest.fixture
def sink():
    with SMTPSink() as s:
        yield s


@pytest.fixture
def mail_host(make_host, sink):
    """mail_host(**config) → a host with mail_queue enabled, sending to `sink`."""
    def factory(db_url=None, plugins=("mail_queue",), **config):
        values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"}
        values.update({k: str(v) for k, v in config.items()})
        host = make_host(plugins=list(plugins), db_url=db_url, config=values)
        records.ensure_admin(host, "admin@example.com")
        return host
    return factory


def partner(host, name, email, inbox=False):
    return records.create_partner(host, name, email, inbox=inbox)


def record_with_followers(host, *emails_, name="Website redesign"):
    rec = records.create_record(host, "generic", name)
    people = []
    for i, e in enumerate(emails_):
        p = partner(host, f"Person {i}", e)
        records.follow(host, rec, p)
        people.append(p)
    return rec, people
