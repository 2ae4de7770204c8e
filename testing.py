"""`postroom.testing`: pytest fixtures for testing a Postroom plugin (or Postroom itself).

Loaded automatically where Postroom is installed (its `pytest11` entry point); with
`PYTEST_DISABLE_PLUGIN_AUTOLOAD` set, declare `pytest_plugins = ["postroom.testing"]` in
your top-level conftest.py. Everything is real: a fresh database per test, an SMTP server
on loopback that records what it receives, the real CLI.

    postroom_host        an opened host on a fresh database, plugins from the
                         `postroom_plugins` marker enabled, mail sent to `postroom_smtp`;
                         runs on SQLite, and again on PostgreSQL when POSTROOM_TEST_PG_URL
                         names a server database (each test gets a database of its own)
    postroom_make_host   make_host(plugins=[...], db_url=None, config={...}, extra=[...],
                         smtp=None) for more hosts or other settings
    postroom_smtp        a started `SMTPSink`: `.wait_for(n)`, `.received()`, `.clear()`
    postroom_clock       the hosts' clock, moved with `.advance(hours=2)` instead of sleeping
    postroom_cli         postroom_cli(*args, input=None) -> click Result, through the real
                         `postroom` command bound to `postroom_host`
    postroom_db_url / postroom_pg_database   the database URLs behind them

    @pytest.mark.postroom_plugins("helpdesk", "mail_queue")
    def test_a_ticket_is_numbered(postroom_host):
        ticket = postroom.create_record(postroom_host, "helpdesk.ticket", "Printer on fire")
        assert ticket.values["number"] == "HD-00001"
"""
import asyncio
import datetime as dt
import email
import email.policy
import os
import socket
import threading
import time
import uuid
from urllib.parse import urlparse, urlunparse

import pytest

PG_URL_ENV = "POSTROOM_TEST_PG_URL"
ENGINES = ["sqlite", "postgresql"]
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)

def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port where connections are refused (nothing listens there)."""
    return free_port()


class Received:
    """One message as the server got it."""

    def __init__(self, mail_from: str, rcpt_tos: list, data: bytes, mail_options=()):
        self.mail_from = mail_from
        self.rcpt_tos = list(rcpt_tos)
        self.mail_options = [o.upper() for o in mail_options]
        self.data = data
        self.message = email.message_from_bytes(data, policy=email.policy.default)
        self.message_id = self.message.get("Message-Id")

    def __repr__(self):
        return f"<Received from={self.mail_from} to={self.rcpt_tos} id={self.message_id}>"


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:
            # aiosmtpd reads commands one line at a time, so a pipelined group is served
            # in order; advertising it makes clients use RFC 2920 pipelining.
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sink.mail_reply_delay:
            await asyncio.sleep(self.sink.mail_reply_delay)
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = (self.sink.rcpt_replies.get(address.lower())
                 or self.sink.domain_replies.get(address.rpartition("@")[2].lower()))
        if reply:
            with self.sink.lock:
                self.sink.refused.append(address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        with sink.lock:
            sink.attempts += 1
            attempt = sink.attempts
        if sink.stall_seconds and (sink.stall_after is None or attempt > sink.stall_after):
            await asyncio.sleep(sink.stall_seconds)
        if sink.drop_after is not None and attempt > sink.drop_after:
            server.transport.abort()  # vanish mid-conversation, like a crashed peer
            return "421 4.3.2 gone"
        if sink.data_reply and (sink.fail_first is None or attempt <= sink.fail_first):
            return sink.data_reply
        sink._record(Received(envelope.mail_from, envelope.rcpt_tos, envelope.original_content
                              or envelope.content, envelope.mail_options))
        if sink.data_delay:  # kept already, like a relay that queues first and answers late
            await asyncio.sleep(sink.data_delay)
        return "250 2.0.0 OK queued"


class SMTPSink:
    """An SMTP server on 127.0.0.1 that records what it accepts and injects the faults asked for.

    with SMTPSink() as sink:                      # accepts everything
        ...; sink.wait_for(3); sink.messages[0].rcpt_tos
    SMTPSink(data_reply="451 4.3.0 try later")    # every DATA answered 4xx
    SMTPSink(data_reply="550 5.7.1 no")           # every DATA answered 5xx
    SMTPSink(rcpt_replies={"bad@x.org": "550 5.1.1 no such user"})   # chosen recipients
    SMTPSink(domain_replies={"x.org": "421 4.7.0 slow down"})        # every recipient of a domain
    SMTPSink(mail_reply="550 5.7.1 sender refused")                   # MAIL FROM refused
    SMTPSink(drop_after=2)                        # accepts 2 messages, then drops the connection at DATA
    SMTPSink(stall_seconds=5)                     # never answers DATA in time
    SMTPSink(stall_seconds=30, stall_after=3)     # accepts 3 messages, then hangs at DATA
    SMTPSink(fail_first=2, data_reply="451 ...")  # 4xx for the first 2 messages, then accepts
    SMTPSink(pipelining=True)                     # advertises PIPELINING (RFC 2920)
    SMTPSink(smtputf8=False)                      # does not offer SMTPUTF8 (RFC 6531)
    SMTPSink(mail_reply_delay=3)                  # answers MAIL FROM after 3 s
    SMTPSink(data_delay=0.5)                      # a slow relay: keeps each message, answers 0.5 s later
    closed_port()                                 # a port where nothing listens (refused)

    `host`/`port` say where it listens; `messages` is the list of `Received` (copy under lock
    with `received()`); `attempts` counts DATA commands seen, accepted or not."""

    def __init__(self, data_reply: str | None = None, rcpt_replies: dict | None = None,
                 mail_reply: str | None = None, drop_after: int | None = None,
                 stall_seconds: float = 0, stall_after: int | None = None,
                 fail_first: int | None = None, port: int | None = None, pipelining: bool = False,
                 smtputf8: bool = True, domain_replies: dict | None = None,
                 mail_reply_delay: float = 0, data_delay: float = 0):
        self.data_reply = data_reply
        self.mail_reply_delay = mail_reply_delay
        self.data_delay = data_delay
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
        # May be changed while the sink runs (a receiver that stops throttling); `refused`
        # lists the recipients answered by rcpt_replies or domain_replies, in order.
        self.domain_replies = {k.lower(): v for k, v in (domain_replies or {}).items()}
        self.refused: list[str] = []
        self.mail_reply = mail_reply
        self.drop_after = drop_after
        self.stall_seconds = stall_seconds
        self.stall_after = stall_after
        self.fail_first = fail_first
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.attempts = 0
        self._arrived = threading.Condition(self.lock)
        self._controller = None

    def _record(self, received):
        with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least `count` messages arrived (or timeout); returns them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
            return list(self.messages)

    def clear(self):
        with self.lock:
            self.messages.clear()
            self.attempts = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "SMTPSink":
        from aiosmtpd.controller import Controller
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      ready_timeout=10, enable_SMTPUTF8=self.smtputf8)
        self._controller.start()
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- databases ---------------------------------------------------------------------------

def _pg_admin(url):
    import psycopg
    p = urlparse(url)
    return psycopg.connect(host=p.hostname or "127.0.0.1", port=p.port or 5432,
                           user=p.username or "postgres", dbname=p.path.lstrip("/") or "postgres",
                           autocommit=True)


@pytest.fixture
def postroom_pg_database(request):
    """A fresh, empty PostgreSQL database URL on the server POSTROOM_TEST_PG_URL names
    (dropped afterwards); the test is skipped when the variable is not set. The test's
    hosts are closed before the drop, whatever order its fixtures were set up in: a host
    still sending in the background would otherwise find its database gone and retry for
    a whole lease."""
    server = os.environ.get(PG_URL_ENV)
    if not server:
        pytest.skip(f"{PG_URL_ENV} is not set (a PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1/postgres)")
    name = f"postroom_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunparse(urlparse(server)._replace(path="/" + name))
    _close_hosts(request.node)
    with _pg_admin(server) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=ENGINES)
def postroom_db_url(request, tmp_path):
    """The database URL of a storage test: an SQLite file under tmp_path, then (same test,
    second run) a fresh PostgreSQL database when POSTROOM_TEST_PG_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'postroom.db'}"
    return request.getfixturevalue("postroom_pg_database")


# --- hosts -------------------------------------------------------------------------------

@pytest.fixture
def postroom_clock():
    """A clock that tests move forward (`.advance(minutes=5)`) instead of sleeping; every
    host the fixtures make reads its time from it."""
    from postroom.core.clock import FrozenClock
    return FrozenClock(START)


@pytest.fixture
def postroom_smtp():
    """A recording SMTP server on 127.0.0.1 (`SMTPSink`), started for the test."""
    with SMTPSink() as sink:
        yield sink


def config_values(tmp_path, db_url=None, smtp=None, config=None) -> dict:
    """The postroom.cfg keys of a test deployment under `tmp_path`."""
    values = {"database": db_url or f"sqlite:///{tmp_path / 'postroom.db'}",
              "log_dir": str(tmp_path / "logs"), "data_dir": str(tmp_path / "data"),
              "domains": "example.com", "cron_time_budget": "30"}
    if smtp is not None:
        values.update({"smtp_host": smtp.host, "smtp_port": str(smtp.port), "smtp_timeout": "5"})
    values.update({k: str(v) for k, v in (config or {}).items()})
    return values


def _close_hosts(node) -> None:
    """Close the hosts `postroom_make_host` made for this test (closing twice is harmless)."""
    for host in getattr(node, "_postroom_hosts", ()):
        host.close()


@pytest.fixture
def postroom_make_host(request, tmp_path, postroom_clock):
    """make_host(plugins=(), db_url=None, config=None, extra=(), available=None, smtp=None,
    clock_=None) -> an opened Host on a fresh deployment under tmp_path (SQLite unless
    `db_url`), with exactly the named plugins enabled (and what they require), mail going
    to the `smtp` sink when one is given. Closed after the test."""
    from postroom.core.config import Config
    from postroom.core.host import Host
    hosts = request.node._postroom_hosts = []

    def make_host(plugins=(), db_url=None, config=None, extra=(), available=None, smtp=None, clock_=None):
        values = config_values(tmp_path, db_url, smtp, config)
        path = tmp_path / "postroom.cfg"
        path.write_text("[postroom]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
        host = Host(Config.load(str(path)), clock=clock_ or postroom_clock, available=available,
                    extra=extra).open()
        hosts.append(host)
        for name in plugins:
            host.enable_plugin(name)
        return host

    yield make_host
    _close_hosts(request.node)


@pytest.fixture
def postroom_host(request, postroom_make_host, postroom_db_url, postroom_smtp):
    """A fresh deployment with the plugins of the `postroom_plugins` marker enabled and
    its mail going to `postroom_smtp`."""
    marker = request.node.get_closest_marker("postroom_plugins")
    return postroom_make_host(plugins=marker.args if marker else (), db_url=postroom_db_url,
                              smtp=postroom_smtp)


def invoke(host, *args, input=None):
    """Run the real `postroom` command with `args` against `host`; the click Result."""
    from click.testing import CliRunner

    from postroom.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args], obj=host, input=input, catch_exceptions=False)


@pytest.fixture
def postroom_cli(postroom_host):
    """postroom_cli(*args, input=None) -> click Result of `postroom ARGS` on postroom_host
    (`.exit_code`, `.stdout`, `.stderr`)."""
    def run(*args, input=None):
        return invoke(postroom_host, *args, input=input)
    return run


def pytest_configure(config):
    config.addinivalue_line("markers", "postroom_plugins(*names): plugins enabled on postroom_host")
