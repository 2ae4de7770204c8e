"""Fixtures for the inbound gateway: a host with the plugin, and the gateway itself on a
free loopback port (a real aiosmtpd server), spoken to with smtplib and aiosmtplib."""
import contextlib
import pathlib
import smtplib
import socket

import pytest

from postroom.plugins.inbound.gateway import GatewayService
from tests.support.smtp import free_port

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def inbound_host(make_host):
    """inbound_host(db_url=None, **config) → a host with the inbound plugin enabled."""
    def factory(db_url=None, extra=(), **config):
        return make_host(plugins=["inbound"], db_url=db_url, extra=extra,
                         config={k: str(v) for k, v in config.items()})
    return factory


@pytest.fixture
def gateway():
    """gateway(host, lmtp=False) → a started GatewayService (stopped after the test);
    `.port` is where it listens."""
    started = []

    def start(host, lmtp=False):
        service = GatewayService(host, "127.0.0.1", free_port(), lmtp=lmtp)
        service.start()
        started.append(service)
        return service
    yield start
    for service in reversed(started):
        service.stop()


@contextlib.contextmanager
def smtp(service):
    client = smtplib.SMTP("127.0.0.1", service.port, timeout=10)
    try:
        client.ehlo("client.test")
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.quit()


def transaction(service, mail_from, rcpts, data: bytes):
    """One SMTP transaction; returns (rcpt replies {addr: (code, text)}, DATA (code, text)).
    DATA is None when no recipient was accepted."""
    with smtp(service) as client:
        code, text = client.mail(mail_from)
        assert code == 250, text
        replies = {r: client.rcpt(r) for r in rcpts}
        if not any(c == 250 for c, _ in replies.values()):
            return replies, None
        return replies, client.data(data)


def message(subject="Hello", body="Hi there", sender="Ann <ann@client.test>", to="support@example.com",
            message_id="<m1@client.test>", headers=None) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if message_id:
        lines.append(f"Message-Id: {message_id}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def fixture_bytes(name, **subs) -> bytes:
    text = (FIXTURES / name).read_text()
    for k, v in subs.items():
        text = text.replace("{" + k + "}", v)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


class Raw:
    """A hand-driven SMTP session (for what smtplib will not send: bare LF, odd ends), from
    a chosen loopback source address (127.0.0.x: several "peers" on one machine)."""

    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return line.rstrip(b"\r\n")

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF)."""
        return self.file.readline() == b""

    def close(self):
        self.file.close()  # else the socket stays open behind the file, and the server never sees the end
        self.sock.close()
