"""One trace per recipient: every cancel reason, and what comes back (bounce, reply,
unsubscribe), plus the automatic blacklist rule."""

import itertools

from postroom.core import tokens
from postroom.plugins.mail_marketing import feedback, mails
from postroom.plugins.mail_marketing.models import Blacklist, Contact, MailingList, Trace

from .conftest import drain, make_campaign, make_list, show


def _traces(cid):
    return {t.email_normalized or t.email: (t.status, t.cancel_reason)
            for t in Trace.select().where(Trace.campaign == cid)}


def test_every_cancel_reason_is_recorded_and_only_the_rest_is_mailed(mk, run, sink, tmp_path, db_url):
    host = mk(db_url=db_url)
    make_list(run, host, tmp_path, "a", ["ann@example.org,Ann", "bob@example.org,Bob",
                                         "cat@example.org,Cat", "dup@example.org,Dup"])
    make_list(run, host, tmp_path, "b", ["dup@example.org,Dup again", "cat@example.org,Cat"])
    run(host, "blacklist", "add", "bob@example.org")
    run(host, "list", "optout", "a", "cat@example.org")
    # Contacts another tool wrote straight into the table, bypassing the import's checks:
    # the campaign checks addresses again when it sends.
    news = MailingList.get(MailingList.name == "a")
    now = host.clock.now()
    Contact.insert_many([
        {"mailing_list": news.id, "name": "No address", "email": None, "email_normalized": None, "created_at": now},
        {"mailing_list": news.id, "name": "Broken", "email": "broken@@example", "email_normalized": "broken@@example",
         "created_at": now}]).execute()
    cid = make_campaign(run, host, tmp_path, "a", "b")
    run(host, "campaign", "send", cid)
    drain(host)
    traces = _traces(cid)
    assert traces["ann@example.org"] == ("sent", None)
    assert traces["bob@example.org"] == ("canceled", "blacklisted")
    assert traces["broken@@example"] == ("canceled", "invalid")
    assert Trace.get((Trace.campaign == cid) & (Trace.email.is_null())).cancel_reason == "missing"
    # dup is on both lists: one mail, one duplicate. cat opted out of list a but is still
    # subscribed through list b, so cat gets the mail once.
    dups = sorted((t.status, t.cancel_reason) for t in Trace.select().where(Trace.email_normalized == "dup@example.org"))
    assert dups == [("canceled", "duplicate"), ("sent", None)]
    cats = sorted((t.status, t.cancel_reason) for t in Trace.select().where(Trace.email_normalized == "cat@example.org"))
    assert cats == [("canceled", "opted_out"), ("sent", None)]
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(3)) == ["ann@example.org", "cat@example.org", "dup@example.org"]
    data = show(run, host, cid)
    assert data["expected"] == 8 and data["sent"] == 3
    assert data["canceled_by_reason"] == {"blacklisted": 1, "duplicate": 1, "invalid": 1, "missing": 1,
                                          "opted_out": 1}


def test_a_bounce_marks_the_trace_and_counts_in_the_campaign(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    received = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    value = tokens.bounce_value(host, received["ann@example.org"].mail_from)
    with host.transaction():   # as the inbound plugin does, inside the bounce's transaction
        host.hook.postroom_bounce_received(host=host, bounce={
            "email": "ann@example.org", "token": value, "message_id": None,
            "reason": "550 5.1.1 user unknown", "partner_id": None, "notification_id": None})
    trace = Trace.get(Trace.email_normalized == "ann@example.org")
    assert (trace.status, trace.failure_reason) == ("bounce", "550 5.1.1 user unknown")
    data = show(run, host, cid)
    assert (data["sent"], data["bounced"], data["bounced_ratio"]) == (2, 1, 50.0)


def test_a_bounce_found_by_message_id_alone_still_marks_the_trace(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    (received,) = sink.wait_for(1)
    with host.transaction():
        feedback.bounce_received(host, {"email": "ann@example.org", "token": None,
                                        "message_id": received.message_id, "reason": "gone"})
    assert Trace.get().status == "bounce"


_SENT = itertools.count(1)


def _bounce(host, address):
    """A bounce of one more chatter mail sent to `address`, as the inbound plugin hands it on
    (tied to its notification: evidence that counts)."""
    with host.transaction():
        feedback.bounce_received(host, {"email": address, "token": None, "message_id": None,
                                        "reason": "550 mailbox unavailable",
                                        "notification_id": next(_SENT)})


def test_five_bounces_over_more_than_a_week_blacklist_the_address(mk, run, clock):
    host = mk()
    for _ in range(4):
        _bounce(host, "gone@example.org")
        clock.advance(days=3)
    assert Blacklist.select().count() == 0
    _bounce(host, "gone@example.org")
    entry = Blacklist.get()
    assert entry.email_normalized == "gone@example.org" and entry.reason.startswith("automatic: bounced 5 times")
    assert "gone@example.org" in run(host, "blacklist", "list").output


def test_five_bounces_within_one_week_are_not_enough(mk, clock):
    host = mk()
    for _ in range(6):
        _bounce(host, "flaky@example.org")
        clock.advance(hours=20)
    assert Blacklist.select().count() == 0


def test_bounces_older_than_thirteen_weeks_do_not_count(mk, clock):
    host = mk()
    for _ in range(4):
        _bounce(host, "old@example.org")
        clock.advance(weeks=5)
    _bounce(host, "old@example.org")
    assert Blacklist.select().count() == 0


def test_a_reply_marks_the_trace_reply(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    received = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    assert feedback.reply_received(host, ["<unknown@x>", received["bob@example.org"].message_id])
    assert not feedback.reply_received(host, ["<unknown@x>"])
    data = show(run, host, cid)
    assert (data["replied"], data["replied_ratio"], data["sent"]) == (1, 50.0, 2)


def test_the_unsubscribe_address_opts_out_of_the_campaign_lists_only(mk, run, sink, tmp_path):
    host = mk()
    host.enable_plugin("inbound")  # whose gateway asks postroom_inbound_recipient
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    make_list(run, host, tmp_path, "other", ["ann@example.org,Ann"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    received = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    header = received["ann@example.org"].message["List-Unsubscribe"]
    address = header[len("<mailto:"):header.index("?")]
    local, domain = address.split("@")
    handler = host.hook.postroom_inbound_recipient(host=host, local_part=local.lower(), domain=domain)
    assert handler is not None
    assert handler(host, "ann@example.org", address, None)[0] == 250
    opted = {(c.mailing_list.name, c.email_normalized): c.opt_out for c in Contact.select()}
    assert opted == {("news", "ann@example.org"): True, ("news", "bob@example.org"): False,
                     ("other", "ann@example.org"): False}


def test_an_unsubscribe_token_cannot_be_forged_for_another_address(mk, run, sink, tmp_path):
    host = mk()
    host.enable_plugin("inbound")  # whose gateway asks postroom_inbound_recipient
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    ann = Trace.get(Trace.email_normalized == "ann@example.org")
    bob = Trace.get(Trace.email_normalized == "bob@example.org")
    ann_token = tokens.sign(host, mails.UNSUBSCRIBE_PURPOSE, f"t{ann.id}")
    forged = f"t{bob.id}-" + ann_token.split("-")[1]
    bounce_token = tokens.sign(host, "bounce", f"t{bob.id}")   # a genuine token of another purpose
    for token in (forged, bounce_token, f"t{bob.id}", "garbage"):
        handler = host.hook.postroom_inbound_recipient(host=host, local_part=f"unsubscribe+{token}",
                                                       domain="example.com")
        assert handler is None   # refused at RCPT like an unknown mailbox
    assert Contact.select().where(Contact.opt_out).count() == 0
    # Other local parts are not ours.
    assert host.hook.postroom_inbound_recipient(host=host, local_part="sales", domain="example.com") is None


def test_a_batch_signs_each_recipient_the_unsubscribe_token_signed_one_at_a_time(mk, run, sink, tmp_path):
    host = mk()
    links = mails.Unsubscribe(host)
    for trace_id, campaign_id in ((1, 1), (1, 1), (987654, 3), (None, 5), (None, 6)):
        assert links.token(trace_id, campaign_id) == mails.unsubscribe_token(host, trace_id, campaign_id)
    # And the mail a campaign sends carries that very token (it unsubscribes its recipient).
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    run(host, "campaign", "send", make_campaign(run, host, tmp_path, "news"))
    drain(host)
    ann = Trace.get(Trace.email_normalized == "ann@example.org")
    (received,) = sink.wait_for(1)
    assert received.message["List-Unsubscribe"].startswith(
        f"<mailto:unsubscribe+{mails.unsubscribe_token(host, ann.id, ann.campaign_id)}@")


def test_a_temporary_failure_leaves_the_trace_outgoing_until_it_is_settled(mk, run, sink, tmp_path):
    sink.data_reply = "451 4.3.0 try later"
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    assert Trace.get().status == "outgoing"
    sink.data_reply = None
    host.clock.advance(hours=2)
    drain(host)
    assert Trace.get().status == "sent" and show(run, host, cid)["sent"] == 1


def test_sent_and_failed_outcomes_update_traces_set_based(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", [f"u{i}@example.org,U{i}" for i in range(400)])
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    from postroom.core import scheduler
    scheduler.run_by_hand(host, "Mail Marketing: Process queue")   # traced and enqueued, not sent
    ids = [t.id for t in Trace.select().where(Trace.campaign == cid).order_by(Trace.id)]

    def statements(fn, mails_):
        before = host.statements()
        fn(host, mails_)
        return host.statements() - before
    sent = lambda chunk: [{"ref": mails.trace_ref(i), "mail_id": None} for i in chunk]  # noqa: E731
    failed = lambda chunk: [{"ref": mails.trace_ref(i), "failure_type": "mail_smtp", "permanent": True,  # noqa: E731
                             "failure_reason": f"550 no {i}"} for i in chunk]
    assert statements(feedback.mails_sent, sent(ids[:5])) == statements(feedback.mails_sent, sent(ids[5:200]))
    assert statements(feedback.mails_failed, failed(ids[200:205])) == statements(feedback.mails_failed,
                                                                                 failed(ids[205:]))
    data = show(run, host, cid)
    assert (data["sent"], data["error"]) == (200, 200)
    assert Trace.get_by_id(ids[-1]).failure_reason == f"550 no {ids[-1]}"
    # Refs that are not ours (chatter mails) are ignored.
    feedback.mails_sent(host, [{"ref": None}, {"ref": "n12"}])
