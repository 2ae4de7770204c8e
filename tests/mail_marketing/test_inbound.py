"""Campaign mail meets the real inbound gateway (aiosmtpd on loopback): the List-Unsubscribe
address opts the contact out, a reply threads onto the campaign's chatter and marks the
trace `reply`, a bounce to the signed address marks it `bounce`."""
import pytest

from postroom.core import tokens
from postroom.core.models import Message
from postroom.plugins.mail_marketing.models import Campaign, Contact, Trace
from tests.inbound.conftest import fixture_bytes, gateway, message, transaction  # noqa: F401 - fixture

from .conftest import drain, make_campaign, make_list, show


@pytest.fixture
def sent_campaign(mk, run, sink, tmp_path):
    """A host with inbound + mail_marketing; a campaign to ann and bob, sent."""
    host = mk()
    host.enable_plugin("inbound")
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = make_campaign(run, host, tmp_path, "news", subject="Spring news")
    run(host, "campaign", "send", cid)
    drain(host)
    received = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    return host, cid, received


def _unsubscribe_address(received):
    header = received.message["List-Unsubscribe"]
    return header[len("<mailto:"):header.index("?")]


def test_mail_to_the_list_unsubscribe_address_opts_the_contact_out(sent_campaign, gateway, run, tmp_path):
    host, cid, received = sent_campaign
    address = _unsubscribe_address(received["ann@example.org"])
    replies, data = transaction(gateway(host), "ann@example.org", [address],
                                message(subject="unsubscribe", to=address, sender="ann@example.org"))
    assert replies[address][0] == 250 and data[0] == 250
    assert {c.email_normalized: c.opt_out for c in Contact.select()} == {"ann@example.org": True,
                                                                         "bob@example.org": False}
    # The next campaign to the list skips her, with the reason.
    cid2 = make_campaign(run, host, tmp_path, "news", subject="Summer")
    run(host, "campaign", "send", cid2)
    drain(host)
    assert show(run, host, cid2)["canceled_by_reason"] == {"opted_out": 1}


def test_a_forged_unsubscribe_address_is_refused_at_rcpt(sent_campaign, gateway):
    host, cid, received = sent_campaign
    genuine = _unsubscribe_address(received["ann@example.org"])
    bob = Trace.get(Trace.email_normalized == "bob@example.org")
    forged = genuine.replace(genuine.split("+")[1].split("-")[0], f"t{bob.id}")
    replies, data = transaction(gateway(host), "mallory@example.net", [forged], message(to=forged))
    assert replies[forged][0] == 550 and data is None
    assert Contact.select().where(Contact.opt_out).count() == 0


def test_a_reply_to_a_campaign_mail_threads_on_the_campaign_and_marks_the_trace(sent_campaign, gateway, run):
    host, cid, received = sent_campaign
    original = received["bob@example.org"]
    data = message(subject="Re: Spring news", body="Tell me more", sender="Bob <bob@example.org>",
                   to="catchall@example.com", message_id="<reply1@client.test>",
                   headers={"In-Reply-To": original.message_id, "References": original.message_id})
    replies, result = transaction(gateway(host), "bob@example.org", ["catchall@example.com"], data)
    assert result[0] == 250, result
    trace = Trace.get(Trace.email_normalized == "bob@example.org")
    assert trace.status == "reply"
    campaign = Campaign.get_by_id(cid)
    posted = Message.get(Message.message_id == "<reply1@client.test>")
    assert posted.record_id == campaign.record_id
    assert show(run, host, cid)["replied"] == 1
    assert "Tell me more" in run(host, "record", "show", "mailing.campaign", campaign.record_id).output


def test_a_bounce_to_the_signed_bounce_address_marks_the_trace(sent_campaign, gateway, run):
    host, cid, received = sent_campaign
    original = received["ann@example.org"]
    to = original.mail_from
    assert tokens.bounce_value(host, to).startswith("mt")
    data = fixture_bytes("dsn_rfc3464.eml", to=to, failed="ann@example.org", msgid=original.message_id)
    replies, result = transaction(gateway(host), "", [to], data)
    assert result[0] == 250
    trace = Trace.get(Trace.email_normalized == "ann@example.org")
    assert trace.status == "bounce" and trace.failure_reason
    assert show(run, host, cid)["bounced"] == 1
