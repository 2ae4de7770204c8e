"""Bounces and feedback that strangers forge, through the real gateway on loopback with
campaign mail really sent: nothing is counted unless it is tied to a mail we sent to that
very address, a token speaks only for its own recipient, a mail counts once, delays are
information, and a receiver refusing *us* does not erase *its* user."""
import pytest

from postroom.core import chatter, records, tokens
from postroom.core.models import Notification, Partner, Record
from postroom.plugins.inbound import aliases
from postroom.plugins.mail_marketing.models import Blacklist, BounceEvent, Trace
from tests.inbound.conftest import gateway, message, transaction  # noqa: F401 - fixture

from .test_inbound import sent_campaign  # noqa: F401 - fixture


def dsn(to, blocks, msgid, sender="MAILER-DAEMON@relay.test") -> bytes:
    """A RFC 3464 report to `to`: blocks are (address, action, status, diagnostic)."""
    parts = "".join(f"\r\nFinal-Recipient: rfc822; {a}\r\nAction: {act}\r\nStatus: {st}\r\n"
                    f"Diagnostic-Code: smtp; {diag}\r\n" for a, act, st, diag in blocks)
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: Delivery Status Notification\r\n"
            f"Message-Id: <dsn-{abs(hash((to, msgid, str(blocks))))}@relay.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nDelivery report.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.test\r\n{parts}"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-Id: {msgid}\r\nSubject: x\r\n\r\n"
            f"--B--\r\n").encode()


GONE = ("550 5.1.1 no such user")


@pytest.fixture
def world(sent_campaign):
    """Campaign mail sent to ann and bob; a chatter post notified carol; victim is a
    partner nobody mailed."""
    host, _, received = sent_campaign
    record = records.create_record(host, "generic", "Website")
    carol = records.create_partner(host, "Carol", "carol@example.org")
    victim = records.create_partner(host, "Victim", "victim@example.org")
    records.follow(host, record, carol)
    post = chatter.post_message(host, record, "Tomorrow at 10", subject="Kick-off")
    note = Notification.get(Notification.message == post)
    return host, received, post, note, carol, victim


def bounce(service, to, data, mail_from=""):
    return transaction(service, mail_from, [to], data)[1]


def events(address):
    return BounceEvent.select().where(BounceEvent.email_normalized == address).count()


def test_forged_tokens_and_unknown_message_ids_record_nothing_and_never_blacklist(world, gateway, clock):
    host, received, post, note, carol, victim = world
    service = gateway(host)
    for week in range(6):
        forged = f"bounce+n{note.id}-{'a' * 16}@example.com"
        assert bounce(service, forged, dsn(forged, [("victim@example.org", "failed", "5.1.1", GONE)],
                                           f"<made-up-{week}@example.com>"))[0] == 250
        assert bounce(service, "bounce@example.com",
                      dsn("bounce@example.com", [("victim@example.org", "failed", "5.1.1", GONE)],
                          f"<unknown-{week}@x.test>"))[0] == 250
        clock.advance(days=8)
    assert events("victim@example.org") == 0
    assert Blacklist.select().count() == 0
    assert Partner.get_by_id(victim.id).message_bounce == 0


def test_a_genuine_token_counts_only_for_its_own_recipient(world, gateway):
    host, received, post, note, carol, victim = world
    service = gateway(host)
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    data = dsn(to, [("carol@example.org", "failed", "5.1.1", GONE), ("victim@example.org", "failed", "5.1.1", GONE)],
               post.message_id)
    code, text = bounce(service, to, data)
    assert code == 250 and b"ignored: victim@example.org" in text
    assert Partner.get_by_id(carol.id).message_bounce == 1
    assert Partner.get_by_id(victim.id).message_bounce == 0
    # A campaign recipient's own Return-Path names only her trace.
    ann = received["ann@example.org"]
    data = dsn(ann.mail_from, [("ann@example.org", "failed", "5.1.1", GONE),
                               ("bob@example.org", "failed", "5.1.1", GONE)], ann.message_id)
    assert bounce(service, ann.mail_from, data)[0] == 250
    statuses = {t.email_normalized: t.status for t in Trace.select()}
    assert statuses == {"ann@example.org": "bounce", "bob@example.org": "sent"}
    assert (events("ann@example.org"), events("bob@example.org"), events("victim@example.org")) == (1, 0, 0)


def test_a_message_id_counts_only_for_the_address_that_mail_was_sent_to(world, gateway):
    host, received, *_ = world
    ann = received["ann@example.org"]
    data = dsn("bounce@example.com", [("bob@example.org", "failed", "5.1.1", GONE)], ann.message_id)
    assert bounce(gateway(host), "bounce@example.com", data)[0] == 250
    assert {t.status for t in Trace.select()} == {"sent"}
    assert events("bob@example.org") == 0


def test_the_same_report_replayed_changes_nothing_and_a_mail_counts_once(world, gateway, clock):
    host, received, post, note, carol, victim = world
    service = gateway(host)
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    bob = received["bob@example.org"]
    for day in range(6):  # a week and more of replays: still one bounce per mail
        for i in range(2):
            data = dsn(to, [("carol@example.org", "failed", "5.1.1", f"{GONE} {day}{i}")], post.message_id)
            assert bounce(service, to, data)[0] == 250
            data = dsn(bob.mail_from, [("bob@example.org", "failed", "5.1.1", f"{GONE} {day}{i}")], bob.message_id)
            assert bounce(service, bob.mail_from, data)[0] == 250
        clock.advance(days=2)
    assert Partner.get_by_id(carol.id).message_bounce == 1
    assert (events("carol@example.org"), events("bob@example.org")) == (1, 1)
    assert Blacklist.select().count() == 0


def test_an_outsiders_message_id_is_not_ours_for_replies_or_bounces(world, gateway):
    host, received, post, note, carol, victim = world
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    first = message(subject="Open a ticket", sender="mallory@evil.test", message_id="<chosen@evil.test>")
    assert transaction(service, "mallory@evil.test", ["support@example.com"], first)[1][0] == 250
    reply = message(subject="Re: ticket", sender="mallory@evil.test", to="catchall@example.com",
                    message_id="<second@evil.test>", headers={"In-Reply-To": "<chosen@evil.test>"})
    code, _ = transaction(service, "mallory@evil.test", ["catchall@example.com"], reply)[1]
    assert code == 550
    # A report returning the outsider's id does not count for whoever was notified of it.
    data = dsn("bounce@example.com", [("carol@example.org", "failed", "5.1.1", GONE)], "<chosen@evil.test>")
    assert bounce(service, "bounce@example.com", data)[0] == 250
    assert Partner.get_by_id(carol.id).message_bounce == 0


def test_a_reply_obeys_the_contact_policy_of_the_alias_owning_the_record(world, gateway, cli_run):
    host, received, post, note, carol, victim = world
    record = Record.get(Record.name == "Website")
    aliases.add_alias(host, "board", "generic", record_id=record.id, contact="followers")
    service = gateway(host)
    data = message(subject="Re: Kick-off", sender="stranger@evil.test", to="catchall@example.com",
                   message_id="<s1@evil.test>", headers={"In-Reply-To": post.message_id})
    code, text = transaction(service, "stranger@evil.test", ["catchall@example.com"], data)[1]
    assert code == 550 and b"contact policy of alias board (followers)" in text
    data = message(subject="Re: Kick-off", sender="carol@example.org", to="catchall@example.com",
                   message_id="<c1@client.test>", headers={"In-Reply-To": post.message_id})
    assert transaction(service, "carol@example.org", ["catchall@example.com"], data)[1][0] == 250
    assert "contact policy of alias board" in cli_run(host, "inbound", "log").output


def test_a_delayed_report_is_information_and_a_policy_refusal_fails_without_counting(world, gateway):
    host, received, post, note, carol, victim = world
    service = gateway(host)
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    data = dsn(to, [("carol@example.org", "delayed", "4.4.1", "451 4.4.1 try again later")], post.message_id)
    assert bounce(service, to, data)[0] == 250
    row = Notification.get_by_id(note.id)
    assert row.status not in ("bounce", "exception") and row.failure_reason.startswith("delayed: 4.4.1")
    assert chatter.envelope(post) != "red"
    data = dsn(to, [("carol@example.org", "failed", "5.7.1", "550 5.7.1 rejected by DMARC policy")], post.message_id)
    assert bounce(service, to, data)[0] == 250
    row = Notification.get_by_id(note.id)
    assert (row.status, row.failure_type) == ("exception", "mail_policy") and "DMARC" in row.failure_reason
    assert chatter.envelope(post) == "red"
    assert Partner.get_by_id(carol.id).message_bounce == 0 and events("carol@example.org") == 0
    ann = received["ann@example.org"]
    data = dsn(ann.mail_from, [("ann@example.org", "failed", "5.7.1", "550 5.7.1 blocked as spam")], ann.message_id)
    assert bounce(service, ann.mail_from, data)[0] == 250
    trace = Trace.get(Trace.email_normalized == "ann@example.org")
    assert (trace.status, trace.failure_type) == ("error", "policy") and events("ann@example.org") == 0
