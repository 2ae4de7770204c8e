"""Fixtures for mail_queue tests: a host whose default server is a loopback sink."""
import pytest

from postroom.core.plugins import hookimpl

from postroom.core import records
from tests.support.smtp import SMTPSink


@pytest.fixture(params=["plain", "pipelining"])
def smtp_mode(request):
    """Every SMTP test runs against a server without and with PIPELINING (RFC 2920), since
    the sender speaks differently to each."""
    return request.param == "pipelining"


@pytest.fixture
def sink(smtp_mode):
    with SMTPSink(pipelining=smtp_mode) as s:
        yield s


@pytest.fixture
def smtp_sink(smtp_mode):
    """smtp_sink(**faults) → a started SMTPSink (in the test's SMTP mode), stopped after."""
    started = []

    def factory(**kwargs):
        kwargs.setdefault("pipelining", smtp_mode)
        started.append(SMTPSink(**kwargs).start())
        return started[-1]
    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def mail_host(make_host, sink):
    """mail_host(**config) → a host with mail_queue enabled, sending to `sink`."""
    def factory(db_url=None, plugins=("mail_queue",), extra=(), **config):
        values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"}
        values.update({k: str(v) for k, v in config.items()})
        host = make_host(plugins=list(plugins), db_url=db_url, config=values, extra=extra)
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


class MailRecorder:
    """Records postroom_mail_sent / postroom_mail_failed calls."""

    def __init__(self):
        self.sent, self.failed = [], []

    @hookimpl(optionalhook=True)
    def postroom_mail_sent(self, host, mails):
        assert not host.in_transaction
        self.sent.extend(mails)

    @hookimpl(optionalhook=True)
    def postroom_mail_failed(self, host, mails):
        assert not host.in_transaction
        self.failed.extend(mails)


def mails(**where):
    from postroom.plugins.mail_queue.models import OutgoingMail
    query = OutgoingMail.select().order_by(OutgoingMail.id)
    for key, value in where.items():
        query = query.where(getattr(OutgoingMail, key) == value)
    return list(query)
