"""The event loop's memo of recent RCPTs, on SQLite (where the loop reads the database on a
miss) and on PostgreSQL (where the pool's answer fills it): the next RCPT to a known alias
from a sender within its limits is answered without a statement, and what the memo may
miss (an alias deleted, messages another process stored) is still caught when the message
is stored; once MEMO_SECONDS pass, the database answers again (real gateway, smtplib)."""
from postroom.core.models import Record
from postroom.plugins.inbound import aliases, decisions
from postroom.plugins.inbound.models import InboundDecision
from postroom.plugins.inbound.rcpt_memo import MEMO_SECONDS

from .conftest import message, smtp


def _rcpt_statements(host, service, mail_from="ann@client.test", rcpt="support@example.com"):
    """(RCPT code, statements the gateway ran for it): nothing else runs meanwhile."""
    with smtp(service) as client:
        assert client.mail(mail_from)[0] == 250
        before = host.db.statements
        code, _ = client.rcpt(rcpt)
        return code, host.db.statements - before


def test_the_second_rcpt_to_an_alias_is_answered_without_reading_the_database(db_url, inbound_host, gateway, clock):
    host = inbound_host(db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    code, statements = _rcpt_statements(host, service)
    assert code == 250 and statements >= 2  # the alias, the sender's and client's counts (and a PRAGMA)
    assert _rcpt_statements(host, service) == (250, 0)
    clock.advance(seconds=MEMO_SECONDS + 0.1)
    assert _rcpt_statements(host, service) == (250, 2)  # read again once the memo is old


def test_an_address_that_is_no_alias_is_asked_of_the_database_every_time(db_url, inbound_host, gateway):
    host = inbound_host(db_url)
    service = gateway(host)
    for _ in range(2):
        code, statements = _rcpt_statements(host, service, rcpt="nobody@example.com")
        assert code == 550 and statements >= 1


def test_an_alias_deleted_within_the_memo_is_refused_when_the_message_is_stored(db_url, inbound_host, gateway, clock):
    host = inbound_host(db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    assert _rcpt_statements(host, service)[0] == 250
    aliases.remove_alias(host, "support")
    with smtp(service) as client:
        client.mail("ann@client.test")
        assert client.rcpt("support@example.com")[0] == 250  # the memo still knows it
        code, text = client.data(message(subject="Too late"))
    assert code == 550, text
    assert Record.select().count() == 0
    clock.advance(seconds=MEMO_SECONDS + 0.1)
    assert _rcpt_statements(host, service)[0] == 550  # and then at RCPT


def test_the_loop_limit_holds_exactly_for_one_gateway_within_the_memo(db_url, inbound_host, gateway):
    """What this gateway accepted counts at once: the fourth RCPT of a limit of three is
    refused at RCPT although the memo had read the count before the first message."""
    host = inbound_host(db_url, inbound_loop_max=3)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    codes = []
    with smtp(service) as client:
        for i in range(4):
            client.mail("robot@loop.test")
            code, _ = client.rcpt("support@example.com")
            codes.append(code)
            if code == 250:
                assert client.data(message(sender="robot@loop.test", message_id=f"<x{i}@loop.test>"))[0] == 250
            else:
                client.rset()
    assert codes == [250, 250, 250, 550]
    assert Record.select().count() == 3


def test_messages_another_process_stored_are_counted_when_the_message_is_stored(db_url, inbound_host, gateway, clock):
    """Rows the memo did not see (another gateway's) let the RCPT through for at most
    MEMO_SECONDS; the writer's own count refuses the message, and then RCPT does."""
    host = inbound_host(db_url, inbound_loop_max=3)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    assert _rcpt_statements(host, service, mail_from="robot@loop.test")[0] == 250  # count read: 0
    with host.transaction():
        for i in range(3):  # as a second gateway process would have written them
            decisions.record(host, peer="127.0.0.1:1", mail_from="robot@loop.test", sender="robot@loop.test",
                             verdict="accepted", route="alias", code=250, reason="2.0.0 Ok", counts=True)
    with smtp(service) as client:
        client.mail("robot@loop.test")
        assert client.rcpt("support@example.com")[0] == 250
        code, text = client.data(message(sender="robot@loop.test", message_id="<late@loop.test>"))
    assert code == 550 and b"loop protection" in text
    assert Record.select().count() == 0
    clock.advance(seconds=MEMO_SECONDS + 0.1)
    assert _rcpt_statements(host, service, mail_from="robot@loop.test")[0] == 550
    assert InboundDecision.select().where(InboundDecision.counts).count() == 3


def test_a_message_to_two_aliases_counts_twice_so_the_limit_still_holds_at_rcpt(db_url, inbound_host, gateway):
    """Each alias of a message makes its own counted row: a sender who writes to two
    aliases at once reaches a limit of four after two messages, and the third is refused
    at RCPT, not let through to DATA."""
    host = inbound_host(db_url, inbound_loop_max=4)
    aliases.add_alias(host, "support", "generic")
    aliases.add_alias(host, "sales", "generic")
    service = gateway(host)
    with smtp(service) as client:
        for i in range(2):
            client.mail("robot@loop.test")
            assert client.rcpt("support@example.com")[0] == 250
            assert client.rcpt("sales@example.com")[0] == 250
            assert client.data(message(sender="robot@loop.test", message_id=f"<two{i}@loop.test>"))[0] == 250
        client.mail("robot@loop.test")
        code, text = client.rcpt("support@example.com")
    assert code == 550 and b"envelope sender <robot@loop.test>" in text
    assert InboundDecision.select().where(InboundDecision.counts).count() == 4


def test_a_stranger_rotating_envelope_senders_keeps_the_memo_bounded(inbound_host, clock):
    """Every new envelope sender is one more key; past MEMO_MAX the memo starts again
    rather than grow with what strangers send (and still answers from the database)."""
    from postroom.plugins.inbound.rcpt_memo import MEMO_MAX, RcptMemo
    host = inbound_host()
    memo = RcptMemo(host)
    now = clock.now()
    for i in range(MEMO_MAX + 50):
        assert memo.loop_refusal(f"r{i}@rotate.test", "192.0.2.7", now) is None
    assert len(memo._counts) <= MEMO_MAX + 1
