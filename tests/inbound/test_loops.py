"""Loop protection that holds: repeated recipients make one record, and rotating the From
header, the envelope sender or both is caught by the other keys (real gateway, smtplib)."""
import smtplib

from postroom.core.models import Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision

from .conftest import message, smtp, transaction


def test_a_repeated_alias_in_rcpt_makes_one_record_and_one_counted_decision(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    replies, (code, _) = transaction(gateway(host), "ann@client.test",
                                     ["support@example.com", "support@example.com", "SUPPORT@example.com"],
                                     message(subject="Once"))
    assert [c for c, _ in replies.values()] == [250, 250] and code == 250  # dict keys: two spellings
    assert [r.name for r in Record.select()] == ["Once"]
    assert InboundDecision.select().where(InboundDecision.counts).count() == 1


def test_over_lmtp_every_repeated_rcpt_is_answered_but_one_record_is_made(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    service = gateway(host, lmtp=True)
    client = smtplib.LMTP("127.0.0.1", service.port)
    try:
        client.ehlo("mta.test")
        client.mail("ann@client.test")
        for rcpt in ("support@example.com", "Support@example.com", "SUPPORT@EXAMPLE.COM"):
            assert client.rcpt(rcpt)[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(message(subject="Lmtp once") + b".\r\n")
        replies = [client.getreply() for _ in range(3)]
        assert [c for c, _ in replies] == [250, 250, 250]
        assert client.noop()[0] == 250  # no reply was left over: the session is in step
    finally:
        client.close()
    assert Record.select().count() == 1


def test_rotating_the_from_header_is_caught_by_the_envelope_sender(inbound_host, gateway):
    host = inbound_host(inbound_loop_max=5)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    codes = []
    for i in range(8):
        replies, data = transaction(service, "robot@loop.test", ["support@example.com"],
                                    message(sender=f"from{i}@rotate.test", message_id=f"<r{i}@loop.test>"))
        codes.append(data[0] if data else list(replies.values())[0][0])
        if data is None:
            text = list(replies.values())[0][1]
    assert codes == [250] * 5 + [550] * 3
    assert text.startswith(b"5.7.1 envelope sender <robot@loop.test>: more than 5 messages")
    assert Record.select().count() == 5


def test_rotating_from_and_envelope_is_caught_by_the_peer_limit(inbound_host, gateway, cli_run):
    host = inbound_host(inbound_loop_max_peer=6)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    with smtp(service) as client:
        for i in range(6):
            client.sendmail(f"env{i}@rotate.test", ["support@example.com"],
                            message(sender=f"from{i}@rotate.test", message_id=f"<p{i}@loop.test>"))
        client.mail("env99@rotate.test")
        code, text = client.rcpt("support@example.com")
    assert code == 550
    assert text.startswith(b"5.7.1 client 127.0.0.1: more than 6 messages within 120 minutes "
                           b"(inbound_loop_max_peer)")
    assert Record.select().count() == 6
    assert "(inbound_loop_max_peer)" in cli_run(host, "inbound", "log").output


def test_the_loop_count_stops_at_the_limit_in_one_statement(inbound_host, db_url):
    """Loop protection only asks whether a limit is reached: a sender far over it is not
    counted row by row (30 rows here, thousands for a real flood), on both engines."""
    from postroom.plugins.inbound import decisions
    host = inbound_host(db_url=db_url)
    with host.transaction():
        for i in range(30):
            decisions.record(host, peer="10.0.0.9:25", mail_from="flood@loop.test", sender="flood@loop.test",
                             recipients=["support@example.com"], verdict="accepted", route="alias",
                             code=250, reason="ok", counts=True, client="10.0.0.9")
    before = host.db.statements
    capped = decisions.recent_counts(host, 60, envelope="flood@loop.test", sender="flood@loop.test",
                                     client="10.0.0.9", caps={"envelope": 5, "from": 7, "peer": 100})
    assert host.db.statements - before == 1
    assert capped == {"envelope": 5, "from": 7, "peer": 30}
    assert decisions.recent_counts(host, 60, envelope="flood@loop.test") == {"envelope": 30, "from": 0, "peer": 0}


def test_a_key_far_below_its_limit_is_bounded_by_the_rows_made_since_and_counted_again_near_it(
        inbound_host, db_url):
    """Between counts, a key's value is its last count plus every decision row made since
    (by any process: here a second host on the same database); it never stays below the
    real count, and once that bound reaches the cap the key is really counted."""
    from postroom.plugins.inbound import decisions
    host = inbound_host(db_url=db_url)
    other = inbound_host(db_url=db_url)

    def made(on, n, sender):
        with on.transaction():
            for _ in range(n):
                decisions.record(on, peer="10.0.0.9:25", mail_from=sender, sender=sender, recipients=["s@example.com"],
                                 verdict="accepted", route="alias", code=250, reason="ok", counts=True)

    def count():
        return decisions.recent_counts(host, 60, envelope="flood@loop.test", caps={"envelope": 10})["envelope"]
    made(host, 3, "flood@loop.test")
    assert count() == 3
    made(other, 4, "flood@loop.test")
    made(other, 2, "someone@else.test")  # not this key, but the bound cannot tell
    assert count() == 9  # 3 + 6 rows since: below the cap, not counted
    made(other, 1, "someone@else.test")
    assert count() == 7  # the bound reached 10: counted, exactly
    made(other, 3, "flood@loop.test")
    assert count() == 10  # 7 + 3 reaches the cap: counted, at the cap


def test_a_count_taken_before_the_first_decision_row_counts_that_row(inbound_host, db_url):
    """A key counted on an empty decision log is bounded by the rows made since, the very
    first one included: a fresh PostgreSQL sequence shows the id it will hand out first as
    its last value, and read as given the bound stayed one short for the whole window
    (a sender got one message past its limit, at RCPT and when stored)."""
    from postroom.plugins.inbound import decisions
    host = inbound_host(db_url=db_url)

    def count():
        return decisions.recent_counts(host, 60, envelope="first@loop.test", caps={"envelope": 10})["envelope"]
    assert count() == 0
    for n in (1, 2):
        with host.transaction():
            decisions.record(host, peer="10.0.0.9:25", mail_from="first@loop.test", sender="first@loop.test",
                             recipients=["s@example.com"], verdict="accepted", route="alias", code=250,
                             reason="ok", counts=True)
        assert count() == n
