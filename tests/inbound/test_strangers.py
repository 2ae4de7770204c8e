"""Strangers on the open Internet: connection caps, session length, idle commands, the
refusal tarpit, and the trusted MTA in front of us (XFORWARD). Real gateway on loopback,
real sockets from several loopback source addresses (127.0.0.x)."""
import smtplib

import pytest

from postroom.core.models import Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision

from .conftest import Raw, message


def send_one(port, source, sender="ann@client.test", subject="Hello", message_id=None):
    client = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        client.ehlo("client.test")
        client.sendmail(sender, ["support@example.com"],
                        message(subject=subject, sender=sender, message_id=message_id or f"<{subject}@c.test>"))
    finally:
        client.quit()


@pytest.fixture
def host(inbound_host):
    def build(**config):
        h = inbound_host(**config)
        aliases.add_alias(h, "support", "generic")
        return h
    return build


def test_connections_beyond_the_caps_get_421_and_a_normal_client_is_still_served(host, gateway):
    service = gateway(host(inbound_max_connections=4, inbound_max_connections_per_peer=2))
    held = [Raw(service.port, "127.0.0.1"), Raw(service.port, "127.0.0.1")]
    try:
        assert all(s.greeting.startswith(b"220") for s in held)
        third = Raw(service.port, "127.0.0.1")
        assert third.greeting.startswith(b"421 4.7.0 Too many connections from your address")
        assert third.closed()
        held += [Raw(service.port, "127.0.0.2"), Raw(service.port, "127.0.0.2")]
        assert held[-1].greeting.startswith(b"220")
        over = Raw(service.port, "127.0.0.3")
        assert over.greeting.startswith(b"421 4.7.0 Too many connections (inbound_max_connections)")
        assert over.closed()
        held.pop().close()  # one slot frees up: a normal client gets through and is served
        send_one(service.port, "127.0.0.3", subject="served")
    finally:
        for s in held:
            s.close()
    assert [r.name for r in Record.select()] == ["served"]


def test_a_session_kept_alive_with_noop_is_closed_after_inbound_session_max(host, gateway, clock):
    service = gateway(host(inbound_session_max=1800))
    session = Raw(service.port)
    try:
        assert session.cmd(b"EHLO client.test").startswith(b"250")
        for _ in range(29):
            clock.advance(minutes=1)
            assert session.cmd(b"NOOP").startswith(b"250")
        clock.advance(minutes=1, seconds=1)
        assert session.cmd(b"NOOP").startswith(b"421 4.7.0 Session too long")
        assert session.closed()
    finally:
        session.close()


def test_commands_without_a_mail_transaction_are_capped(host, gateway):
    service = gateway(host(inbound_max_idle_commands=5))
    session = Raw(service.port)
    try:
        assert session.cmd(b"EHLO client.test").startswith(b"250")
        # A client that sends mail is never cut: DATA starts the count again.
        for i in range(3):
            assert session.cmd(b"NOOP").startswith(b"250")
            assert session.cmd(b"MAIL FROM:<ann@client.test>").startswith(b"250")
            assert session.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
            assert session.cmd(b"DATA").startswith(b"354")
            session.sock.sendall(message(subject=f"m{i}", message_id=f"<m{i}@c.test>") + b".\r\n")
            assert session.reply().startswith(b"250")
        answers = [session.cmd(b"NOOP") for _ in range(5)]
        assert [a[:3] for a in answers] == [b"250"] * 5
        assert session.cmd(b"RSET").startswith(b"421 4.7.0 Too many commands without a mail transaction")
        assert session.closed()
    finally:
        session.close()
    assert Record.select().count() == 3


def test_refusals_are_aggregated_per_peer_and_minute_and_a_noisy_peer_is_tarpitted(
        host, gateway, clock, cli_run):
    h = host(inbound_refusal_burst=3, inbound_tarpit_refusals=50, inbound_tarpit_minutes=10)
    service = gateway(h)
    session = Raw(service.port)
    try:
        session.cmd(b"EHLO prober.test")
        session.cmd(b"MAIL FROM:<probe@prober.test>")
        answers = [session.cmd(b"RCPT TO:<user%d@example.com>" % i) for i in range(51)]
        assert all(a.startswith(b"550 5.1.1") for a in answers)
        # More than 50 refusals in a minute: everything from this peer is now 421.
        assert session.cmd(b"RCPT TO:<user99@example.com>").startswith(b"421 4.7.0 Too many refused")
        assert session.closed()
    finally:
        session.close()
    again = Raw(service.port)
    assert again.greeting.startswith(b"421 4.7.0") and again.closed()
    again.close()
    clock.advance(minutes=1)
    # Someone else is still served, and their refusal flushes the minute that is over.
    other = Raw(service.port, "127.0.0.2")
    try:
        other.cmd(b"EHLO other.test")
        other.cmd(b"MAIL FROM:<x@other.test>")
        assert other.cmd(b"RCPT TO:<nobody@example.com>").startswith(b"550")
    finally:
        other.close()
    rows = list(InboundDecision.select().where(InboundDecision.client == "127.0.0.1")
                .order_by(InboundDecision.id))
    assert [r.repeat for r in rows] == [1, 1, 1, 48]  # 3 alone, then one row for the other 48
    assert rows[-1].reason.startswith("48 more refusals within this minute, like: 5.1.1")
    log = cli_run(h, "inbound", "log", "--json")
    assert '"repeat": 48' in log.output
    clock.advance(minutes=10)
    send_one(service.port, "127.0.0.1", subject="after the tarpit")
    assert Record.select().count() == 1


def lmtp(port, source="127.0.0.1"):
    client = smtplib.LMTP("127.0.0.1", port, source_address=(source, 0))
    client.sock.settimeout(10)
    return client


def xforward_delivery(port, addr, sender, subject, source="127.0.0.1"):
    client = lmtp(port, source)
    try:
        client.ehlo("mta.example.com")
        forwarded = client.docmd("XFORWARD", f"NAME=mx.{sender.split('@')[1]} ADDR={addr} PROTO=ESMTP")
        assert client.mail(sender)[0] == 250
        rcpt = client.rcpt("support@example.com")
        if rcpt[0] != 250:
            return forwarded, rcpt, client
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(smtplib.quotedata(message(subject=subject, sender=sender,
                                              message_id=f"<{subject}@c.test>").decode()).encode() + b"\r\n.\r\n")
        return forwarded, client.getreply(), client
    finally:
        client.close()


def test_a_trusted_mta_names_the_original_client_with_xforward_and_that_client_counts(
        host, gateway, cli_run):
    h = host(inbound_trusted_peers="127.0.0.1", inbound_loop_max_peer=2, inbound_max_connections_per_peer=2)
    service = gateway(h, lmtp=True)
    probe = lmtp(service.port)
    assert "xforward" in (probe.ehlo("mta.example.com") and probe.esmtp_features)
    probe.close()
    # Per-peer connection caps do not apply to the MTA in front of us.
    held = [Raw(service.port) for _ in range(4)]
    assert all(s.greeting.startswith(b"220") for s in held)
    for s in held:
        s.close()
    answers = [xforward_delivery(service.port, "192.0.2.7", f"u{i}@one.test", f"one{i}")[1] for i in range(3)]
    assert [code for code, _ in answers] == [250, 250, 550]
    assert b"client 192.0.2.7: more than 2 messages" in answers[2][1]
    assert b"(inbound_loop_max_peer)" in answers[2][1]
    # Another client behind the same MTA is not held back by the first one.
    assert xforward_delivery(service.port, "192.0.2.8", "v@two.test", "two")[1][0] == 250
    out = cli_run(h, "inbound", "log", "--json").output
    assert '"client": "192.0.2.7"' in out and '"client": "192.0.2.8"' in out


def test_xforward_from_an_untrusted_peer_is_refused_and_the_peer_itself_counts(host, gateway):
    h = host(inbound_trusted_peers="127.0.0.1", inbound_loop_max_peer=1)
    service = gateway(h, lmtp=True)
    forwarded, reply, _ = xforward_delivery(service.port, "192.0.2.7", "u@one.test", "first", source="127.0.0.2")
    assert forwarded[0] == 550 and reply[0] == 250
    forwarded, reply, _ = xforward_delivery(service.port, "192.0.2.9", "w@three.test", "second",
                                            source="127.0.0.2")
    assert reply[0] == 550 and b"client 127.0.0.2" in reply[1]
