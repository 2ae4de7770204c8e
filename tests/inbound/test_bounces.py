"""Bounces in real-world formats (fixtures under fixtures/), found by signed token or by
the returned Message-Id, with their effects and the hook mail_marketing listens to."""
import pytest

from postroom.core import chatter, records, tokens
from postroom.core.models import Message, Notification, Partner, Record
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.plugins.inbound import aliases

from .conftest import fixture_bytes, transaction

FORMATS = ["dsn_rfc3464.eml", "postfix.eml", "exim.eml", "qmail.eml", "exchange.eml"]


class BounceListener:
    PLUGIN = PluginInfo("listener")

    def __init__(self):
        self.bounces = []

    @hookimpl(optionalhook=True)
    def postroom_bounce_received(self, host, bounce):
        self.bounces.append(bounce)


@pytest.fixture
def setup(inbound_host):
    """A host with a posted message to bob@example.org and a hook listener."""
    def build(db_url=None):
        listener = BounceListener()
        host = inbound_host(db_url=db_url, extra=[listener])
        host.enable_plugin("listener")
        record = records.create_record(host, "generic", "Website")
        bob = records.create_partner(host, "Bob", "bob@example.org")
        records.follow(host, record, bob)
        sent = chatter.post_message(host, record, "Tomorrow at 10", subject="Kick-off")
        note = Notification.get(Notification.message == sent)
        return host, listener, sent, note, bob
    return build


def send_bounce(service, data, rcpt, mail_from=""):
    return transaction(service, mail_from, [rcpt], data)[1]


@pytest.mark.parametrize("fixture", FORMATS)
def test_a_bounce_to_the_signed_address_marks_the_notification_bounced(setup, gateway, fixture, db_url):
    host, listener, sent, note, bob = setup(db_url)
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    data = fixture_bytes(fixture, to=to, failed="bob@example.org", msgid=sent.message_id)
    code, text = send_bounce(gateway(host), data, to)
    assert code == 250 and b"bounce" in text
    note = Notification.get_by_id(note.id)
    assert (note.status, note.failure_type) == ("bounce", "mail_bounce")
    assert note.failure_reason
    assert chatter.envelope(sent) == "red"
    assert Partner.get_by_id(bob.id).message_bounce == 1
    assert listener.bounces == [{"email": "bob@example.org", "token": f"n{note.id}",
                                 "message_id": sent.message_id, "reason": note.failure_reason,
                                 "partner_id": bob.id, "notification_id": note.id, "counts": True,
                                 "addresses": ["bob@example.org"]}]


@pytest.mark.parametrize("fixture", FORMATS)
def test_a_bounce_without_token_is_matched_by_the_returned_message_id(setup, gateway, fixture):
    host, listener, sent, note, bob = setup()
    data = fixture_bytes(fixture, to="bounce@example.com", failed="bob@example.org", msgid=sent.message_id)
    assert send_bounce(gateway(host), data, "bounce@example.com")[0] == 250
    assert Notification.get_by_id(note.id).status == "bounce"
    assert Partner.get_by_id(bob.id).message_bounce == 1
    assert listener.bounces[0]["token"] is None and listener.bounces[0]["notification_id"] == note.id


def test_the_dsn_diagnostic_becomes_the_failure_reason(setup, gateway):
    host, _, sent, note, _ = setup()
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    data = fixture_bytes("postfix.eml", to=to, failed="bob@example.org", msgid=sent.message_id)
    send_bounce(gateway(host), data, to)
    reason = Notification.get_by_id(note.id).failure_reason
    assert reason.startswith("5.1.1 550 5.1.1 <bob@example.org>: Recipient address rejected: User")


def test_a_forged_bounce_token_marks_nothing(setup, gateway):
    host, listener, sent, note, bob = setup()
    other = chatter.post_message(host, Record.get(), "Second", subject="Second")
    victim = Notification.get(Notification.message == other)
    forged = f"bounce+n{victim.id}-aaaaaaaaaaaaaaaa@example.com"
    data = fixture_bytes("dsn_rfc3464.eml", to=forged, failed="bob@example.org", msgid="<not-ours@x.test>")
    code, text = send_bounce(gateway(host), data, forged)
    assert code == 250 and b"forged or mangled token" in text
    assert Notification.get_by_id(victim.id).status != "bounce"
    assert Partner.get_by_id(bob.id).message_bounce == 0
    # An unknown Message-Id is handed on (a campaign's mail, perhaps) for its owner to check.
    assert [(b["token"], b["message_id"], b["addresses"]) for b in listener.bounces] == [
        (None, "<not-ours@x.test>", ["bob@example.org"])]


def test_a_campaign_bounce_hands_its_token_and_address_to_the_hook(setup, gateway):
    host, listener, *_ = setup()
    to = tokens.bounce_address(host, "mt17")
    data = fixture_bytes("exim.eml", to=to, failed="lead@prospect.test", msgid="<campaign-17@example.com>")
    assert send_bounce(gateway(host), data, to)[0] == 250
    [bounce] = listener.bounces
    assert (bounce["token"], bounce["email"], bounce["notification_id"]) == ("mt17", "lead@prospect.test", None)
    assert bounce["reason"].startswith("550 5.1.1")


def test_a_bounce_to_an_alias_never_creates_a_record(setup, gateway):
    host, _, sent, note, _ = setup()
    aliases.add_alias(host, "support", "generic")
    data = fixture_bytes("qmail.eml", to="support@example.com", failed="bob@example.org", msgid=sent.message_id)
    code, text = send_bounce(gateway(host), data, "support@example.com", mail_from="")
    assert code == 250 and b"bounce" in text
    assert Record.select().count() == 1
    assert Notification.get_by_id(note.id).status == "bounce"


def test_a_bounce_that_names_nobody_is_accepted_and_changes_nothing(setup, gateway):
    host, listener, *_ = setup()
    data = b"From: MAILER-DAEMON@relay.test\r\nSubject: ???\r\n\r\nsomething went wrong\r\n"
    code, text = send_bounce(gateway(host), data, "bounce@example.com")
    assert code == 250 and b"no bounced recipient recognised" in text
    assert listener.bounces == [] and Message.select().count() == 1


def test_a_bounce_to_the_return_path_mail_queue_used_turns_the_envelope_red(make_host, gateway):
    from tests.support.smtp import SMTPSink
    with SMTPSink() as sink:
        host = make_host(plugins=["mail_queue", "inbound"],
                         config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"})
        records.ensure_admin(host, "admin@example.com")
        record = records.create_record(host, "generic", "Quote 42")
        bob = records.create_partner(host, "Bob", "bob@example.org")
        records.follow(host, record, bob)
        sent = chatter.post_message(host, record, "Here is the quote", subject="Quote 42")
        [out] = sink.wait_for(1)
    assert chatter.envelope(sent) == "white"
    return_path = out.mail_from
    data = fixture_bytes("postfix.eml", to=return_path, failed="bob@example.org", msgid=out.message_id)
    assert send_bounce(gateway(host), data, return_path)[0] == 250
    assert chatter.envelope(sent) == "red"
    [row] = chatter.notification_rows(sent)
    assert (row["status"], row["failure_type"]) == ("bounce", "mail_bounce")
    assert Partner.get_by_id(bob.id).message_bounce == 1


class BrokenListener:
    PLUGIN = PluginInfo("broken")

    @hookimpl(optionalhook=True)
    def postroom_bounce_received(self, host, bounce):
        Partner.update(name="written by the broken listener").execute()
        raise RuntimeError("listener bug")


def test_a_failing_bounce_listener_does_not_make_the_bounce_fail(inbound_host, gateway):
    host = inbound_host(extra=[BrokenListener()])
    host.enable_plugin("broken")
    record = records.create_record(host, "generic", "Website")
    bob = records.create_partner(host, "Bob", "bob@example.org")
    records.follow(host, record, bob)
    sent = chatter.post_message(host, record, "Tomorrow at 10", subject="Kick-off")
    note = Notification.get(Notification.message == sent)
    to = tokens.bounce_address(host, tokens.notification_token(note.id))
    data = fixture_bytes("dsn_rfc3464.eml", to=to, failed="bob@example.org", msgid=sent.message_id)
    assert send_bounce(gateway(host), data, to)[0] == 250
    assert Notification.get_by_id(note.id).status == "bounce"
    assert Partner.get_by_id(bob.id).name == "Bob"  # the listener's own write was undone
