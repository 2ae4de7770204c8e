"""Real SMTP servers on 127.0.0.1 for tests: a recording sink and fault-injecting variants.

Every server is an aiosmtpd `Controller` on a free loopback port, usable as a context
manager (or through the `smtp_sink` fixture factory). What it received is kept in a
thread-safe list of `Received` (envelope sender, recipients, raw bytes, parsed message and
its Message-Id), so tests assert on what really went over the wire.

    with SMTPSink() as sink:                      # accepts everything
        ...; sink.wait_for(3); sink.messages[0].rcpt_tos
    SMTPSink(data_reply="451 4.3.0 try later")    # every DATA answered 4xx
    SMTPSink(data_reply="550 5.7.1 no")           # every DATA answered 5xx
    SMTPSink(rcpt_replies={"bad@x.org": "550 5.1.1 no such user"})   # chosen recipients
    SMTPSink(mail_reply="550 5.7.1 sender refused")                   # MAIL FROM refused
    SMTPSink(drop_after=2)                        # accepts 2 messages, then drops the connection at DATA
    SMTPSink(stall_seconds=5)                     # never answers DATA in time
    SMTPSink(stall_seconds=30, stall_after=3)     # accepts 3 messages, then hangs at DATA
    SMTPSink(fail_first=2, data_reply="451 ...")  # 4xx for the first 2 messages, then accepts
    SMTPSink(pipelining=True)                     # advertises PIPELINING (RFC 2920)
    SMTPSink(smtputf8=False)                      # does not offer SMTPUTF8 (RFC 6531)
    closed_port()                                 # a port where nothing listens (refused)
"""
import asyncio
import email
import email.policy
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

__all__ = ["Received", "SMTPSink", "closed_port", "free_port", "smtp_sink"]


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
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
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
        return "250 2.0.0 OK queued"


class SMTPSink:
    """An SMTP server on 127.0.0.1 that records what it accepts and injects the faults asked for.

    `host`/`port` say where it listens; `messages` is the list of `Received` (copy under lock
    with `received()`); `attempts` counts DATA commands seen, accepted or not."""

    def __init__(self, data_reply: str | None = None, rcpt_replies: dict | None = None,
                 mail_reply: str | None = None, drop_after: int | None = None,
                 stall_seconds: float = 0, stall_after: int | None = None,
                 fail_first: int | None = None, port: int | None = None, pipelining: bool = False,
                 smtputf8: bool = True):
        self.data_reply = data_reply
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
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


@pytest.fixture
def smtp_sink():
    """smtp_sink(**faults) → a started SMTPSink, stopped after the test. Import this fixture
    into your test module (`from tests.support.smtp import smtp_sink`)."""
    started = []

    def factory(**kwargs):
        sink = SMTPSink(**kwargs).start()
        started.append(sink)
        return sink

    yield factory
    for sink in started:
        sink.stop()
