"""Size and recipient limits, SMTP smuggling, loop protection on the moved clock, idle
sessions, automatic mail."""

import pytest

from postroom.core.models import Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision

from .conftest import Raw, message, smtp, transaction


@pytest.fixture
def host(inbound_host):
    h = inbound_host(inbound_max_size=2000)
    aliases.add_alias(h, "support", "generic")
    return h


def test_a_message_over_the_size_limit_is_refused_with_552_5_3_4(host, gateway):
    service = gateway(host)
    code, text = transaction(service, "ann@client.test", ["support@example.com"],
                             message(body="x" * 70 + ("\r\n" + "x" * 70) * 40))[1]
    assert (code, text.decode()) == (552, "5.3.4 Message size exceeds fixed maximum message size")
    assert Record.select().count() == 0


def test_a_declared_size_over_the_limit_is_refused_at_mail_from(host, gateway):
    with smtp(gateway(host)) as client:
        code, text = client.mail("ann@client.test", ["SIZE=999999"])
    assert (code, text.decode()) == (552, "5.3.4 Message size exceeds fixed maximum message size")


def test_the_limit_is_advertised_in_ehlo(host, gateway):
    with smtp(gateway(host)) as client:
        assert client.esmtp_features["size"] == "2000"


@pytest.mark.parametrize("smuggled_end", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"])
def test_smtp_smuggling_forms_are_not_taken_as_end_of_data(host, gateway, smuggled_end):
    session = Raw(gateway(host).port)
    try:
        assert session.cmd(b"EHLO client.test").startswith(b"250")
        assert session.cmd(b"MAIL FROM:<ann@client.test>").startswith(b"250")
        assert session.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert session.cmd(b"DATA").startswith(b"354")
        smuggled = (b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
                    b"Subject: smuggled\r\n\r\nowned\r\n")
        session.sock.sendall(b"Subject: first\r\n\r\nhello" + smuggled_end + smuggled + b".\r\n")
        answer = session.reply()
        assert answer.startswith(b"550 5.5.2")
        assert session.cmd(b"NOOP").startswith(b"250")  # one reply only: nothing was smuggled
    finally:
        session.close()
    assert Record.select().count() == 0


def test_loop_protection_refuses_a_sender_past_20_in_120_minutes_until_the_window_passes(
        inbound_host, gateway, clock):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    with smtp(service) as client:
        for i in range(20):
            client.sendmail("robot@loop.test", ["support@example.com"],
                            message(subject=f"n{i}", sender="robot@loop.test", message_id=f"<l{i}@loop.test>"))
    clock.advance(minutes=119)
    with smtp(service) as client:  # a new session: one is never longer than inbound_session_max
        client.mail("robot@loop.test")
        code, text = client.rcpt("support@example.com")
        client.rset()
    assert code == 550 and text.decode().startswith(
        "5.7.1 envelope sender <robot@loop.test>: more than 20 messages within 120 minutes (inbound_loop_max)")
    assert Record.select().count() == 20
    clock.advance(minutes=2)  # the first mails leave the window
    replies, data = transaction(service, "robot@loop.test", ["support@example.com"],
                                message(sender="robot@loop.test", message_id="<l99@loop.test>"))
    assert data[0] == 250


def test_loop_protection_judges_the_from_header_too(inbound_host, gateway):
    host = inbound_host(inbound_loop_max=2)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    for i in range(2):
        transaction(service, f"env{i}@bounce.test", ["support@example.com"],
                    message(sender="robot@loop.test", message_id=f"<f{i}@loop.test>"))
    code, text = transaction(service, "env9@bounce.test", ["support@example.com"],
                             message(sender="robot@loop.test", message_id="<f9@loop.test>"))[1]
    assert code == 550 and b"loop protection" in text


def test_an_idle_session_is_closed_after_the_timeout(inbound_host, gateway):
    host = inbound_host(inbound_timeout=1)
    session = Raw(gateway(host).port)
    try:
        session.sock.settimeout(5)
        assert session.file.readline() == b""  # the server hung up; nothing hangs
    finally:
        session.close()


def test_size_and_line_length_refusals_are_in_the_decision_log(host, gateway):
    service = gateway(host)
    transaction(service, "ann@client.test", ["support@example.com"], message(body="y\r\n" * 1500))
    code, text = transaction(service, "ann@client.test", ["support@example.com"], message(body="y" * 1500))[1]
    assert (code, text) == (500, b"5.5.2 Line too long (over 1000 characters, see RFC 5321 4.5.3.1.6)")
    rows = list(InboundDecision.select().order_by(InboundDecision.id))
    assert [(d.verdict, d.code, d.recipients) for d in rows] == [
        ("refused", 552, "support@example.com"), ("refused", 500, "support@example.com")]


def test_many_recipients_in_one_session_do_not_exhaust_the_limit_across_transactions(inbound_host, gateway):
    host = inbound_host(inbound_max_recipients=1)
    aliases.add_alias(host, "support", "generic")
    with smtp(gateway(host)) as client:
        for i in range(3):
            refused = client.sendmail("ann@client.test", ["support@example.com"],
                                      message(message_id=f"<x{i}@client.test>"))
            assert refused == {}
    with smtp(gateway(host)) as client:
        refused = client.sendmail("ann@client.test", ["support@example.com", "catchall@example.com"],
                                  message(message_id="<x9@client.test>"))
    assert refused == {"catchall@example.com": (452, b"4.5.3 Too many recipients")}


def test_a_sender_stalling_in_the_middle_of_data_is_cut_off_and_nothing_is_stored(inbound_host, gateway):
    host = inbound_host(inbound_timeout=1)
    aliases.add_alias(host, "support", "generic")
    session = Raw(gateway(host).port)
    try:
        for line in (b"EHLO c.test", b"MAIL FROM:<ann@client.test>", b"RCPT TO:<support@example.com>"):
            assert session.cmd(line).startswith(b"250")
        assert session.cmd(b"DATA").startswith(b"354")
        session.sock.sendall(b"Subject: half\r\n\r\nthe rest never comes")
        session.sock.settimeout(5)
        assert session.file.readline() == b""
    finally:
        session.close()
    assert Record.select().count() == 0
