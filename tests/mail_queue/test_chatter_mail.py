"""Mail from chatter posts: one SMTP message per recipient, threading, urgent after commit."""
import pytest

from postroom.core import chatter, records, tokens
from postroom.core.errors import InvalidInput
from postroom.core.models import Partner

from .conftest import MailRecorder, mails, partner, record_with_followers


def test_a_comment_reaches_each_follower_once_with_the_chatter_message_id(mail_host, sink, db_url):
    host = mail_host(db_url=db_url)
    rec, people = record_with_followers(host, "ann@example.org", "bob@example.org")
    msg = chatter.post_message(host, rec, "Hello there", subject="Kick-off")
    got = sink.wait_for(2)
    assert len(got) == 2
    assert sorted(r.rcpt_tos[0] for r in got) == ["ann@example.org", "bob@example.org"]
    for r in got:
        assert r.message_id == msg.message_id
        assert r.message["Subject"] == "Kick-off"
        assert r.message["Reply-To"] == "catchall@example.com"
        assert r.message["To"].addresses[0].addr_spec == r.rcpt_tos[0]
        assert "Hello there" in r.message.get_body(("plain",)).get_content()
        assert "<p>Hello there</p>" in r.message.get_body(("html",)).get_content()
    # The envelope sender is the signed bounce address of that recipient's notification.
    notes = {n["email"]: n["id"] for n in chatter.notification_rows(msg)}
    for r in got:
        assert r.mail_from == r.message["Return-Path"].strip("<>")
        assert tokens.bounce_value(host, r.mail_from) == tokens.notification_token(notes[r.rcpt_tos[0]])
    assert mails() == []  # auto_delete: the content lives on in the chatter
    assert {n["status"] for n in chatter.notification_rows(msg)} == {"sent"}
    assert chatter.envelope(msg) == "white"


def test_a_reply_carries_in_reply_to_and_references_of_its_parent(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    first = chatter.post_message(host, rec, "Question?", subject="Q")
    reply = chatter.post_message(host, rec, "Answer", subject="Re: Q", parent=first)
    got = sink.wait_for(2)
    answer = [r for r in got if r.message_id == reply.message_id][0]
    assert answer.message["In-Reply-To"] == first.message_id
    assert first.message_id in answer.message["References"]


def test_urgent_mail_leaves_only_after_the_transaction_commits(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    with host.transaction():
        chatter.post_message(host, rec, "Inside", subject="T")
        assert sink.received() == []
    assert len(sink.wait_for(1)) == 1


def test_a_rolled_back_post_sends_nothing(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    with pytest.raises(RuntimeError):
        with host.transaction():
            chatter.post_message(host, rec, "Never", subject="T")
            raise RuntimeError("boom")
    assert sink.received() == [] and mails() == []


def test_partners_who_prefer_inbox_get_no_email_and_use_none_of_the_limit(mail_host, sink):
    host = mail_host()
    rec = records.create_record(host, "generic", "R")
    records.follow(host, rec, partner(host, "Inbox Ida", "ida@example.org", inbox=True))
    records.follow(host, rec, partner(host, "Mail Max", "max@example.org"))
    chatter.post_message(host, rec, "Hi", subject="S")
    got = sink.wait_for(1)
    assert [r.rcpt_tos for r in got] == [["max@example.org"]]
    from postroom.plugins.mail_queue import daily_limit
    assert daily_limit.limit_status(host)["count"] == 1


def test_an_invalid_recipient_fails_only_that_recipient(mail_host, sink, db_url):
    rec_ = MailRecorder()
    host = mail_host(db_url=db_url, extra=[rec_])
    rec, people = record_with_followers(host, "ann@example.org", "bob@example.org", "cy@example.org")
    Partner.update(email="bob at example").where(Partner.id == people[1].id).execute()
    Partner.update(email=None).where(Partner.id == people[2].id).execute()
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    got = sink.wait_for(1)
    assert [r.rcpt_tos for r in got] == [["ann@example.org"]]
    by_email = {n["partner_id"]: n for n in chatter.notification_rows(msg)}
    assert by_email[people[0].id]["status"] == "sent"
    assert by_email[people[1].id]["status"] == "exception"
    assert by_email[people[1].id]["failure_type"] == "mail_email_invalid"
    assert by_email[people[2].id]["failure_type"] == "mail_email_missing"
    assert chatter.envelope(msg) == "red"
    assert sorted(m.failure_type for m in mails(state="exception")) == ["mail_email_invalid", "mail_email_missing"]
    assert {f["failure_type"] for f in rec_.failed} == {"mail_email_invalid", "mail_email_missing"}
    assert all(f["permanent"] for f in rec_.failed)


def test_the_temporary_admin_address_as_sender_fails_with_mail_from_invalid(make_host, sink):
    host = make_host(plugins=["mail_queue"], config={"smtp_host": sink.host, "smtp_port": sink.port})
    admin, _ = records.ensure_admin(host)  # temporary address
    rec, people = record_with_followers(host, "ann@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S", author=admin)
    note = chatter.notification_rows(msg)[0]
    assert note["status"] == "exception" and note["failure_type"] == "mail_from_invalid"
    assert "admin set-email" in note["failure_reason"]
    assert sink.received() == []


def test_a_large_fan_out_goes_through_the_queue(mail_host, sink, cli_run):
    host = mail_host(mail_force_send_limit=2)
    rec, _ = record_with_followers(host, "a@example.org", "b@example.org", "c@example.org")
    chatter.post_message(host, rec, "News", subject="All")
    assert sink.received() == []
    assert [m.state for m in mails()] == ["outgoing"] * 3
    cli_run(host, "queue", "process")
    assert len(sink.wait_for(3)) == 3
    assert mails() == []


def test_a_subject_with_a_line_break_is_refused_before_anything_is_written(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    with pytest.raises(InvalidInput):
        chatter.post_message(host, rec, "x", subject="Hi\r\nBcc: evil@example.net")
    assert sink.received() == [] and mails() == []


def test_a_plugin_can_give_the_records_alias_as_reply_to(mail_host, sink):
    from postroom.core.plugins import hookimpl

    class Aliases:
        @hookimpl(optionalhook=True)
        def postroom_reply_to(self, host, record):
            return f"\"{record.name}\" <support@example.com>"
    host = mail_host(extra=[Aliases()])
    rec, _ = record_with_followers(host, "ann@example.org", name="Ticket 12")
    chatter.post_message(host, rec, "Hi", subject="S")
    [got] = sink.wait_for(1)
    assert got.message["Reply-To"].addresses[0].addr_spec == "support@example.com"


def test_a_line_break_smuggled_into_a_partner_name_never_reaches_the_wire(mail_host, sink):
    host = mail_host()
    rec, people = record_with_followers(host, "ann@example.org", "bob@example.org")
    Partner.update(name="Ann\r\nBcc: evil@example.net").where(Partner.id == people[0].id).execute()
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    got = sink.wait_for(1)
    assert [r.rcpt_tos for r in got] == [["bob@example.org"]]
    assert all(b"evil" not in r.data for r in got)
    failed = [n for n in chatter.notification_rows(msg) if n["status"] == "exception"]
    assert len(failed) == 1 and "header injection" in failed[0]["failure_reason"]


def test_every_send_is_logged_with_the_ids_to_follow_it(mail_host, sink, tmp_path):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    for handler in host.log.handlers:
        handler.flush()
    text = (tmp_path / "logs" / "postroom.log").read_text()
    line = [ln for ln in text.splitlines() if "sent to ann@example.org" in ln][0]
    assert msg.message_id in line and "reply=250 2.0.0 OK queued" in line and "notification=" in line


def test_turning_a_post_into_mails_is_set_based(mail_host, sink):
    host = mail_host(mail_force_send_limit=0)  # everything through the queue: count the post only
    counts = []
    for size in (3, 3, 300):
        rec = records.create_record(host, "generic", f"R{size}")
        from postroom.core.models import Follower
        people = [partner(host, f"P{size}-{i}-{len(counts)}", f"p{size}.{i}.{len(counts)}@example.org")
                  for i in range(size)]
        with host.transaction():
            Follower.insert_many([{"record": rec.id, "partner": p.id} for p in people]).execute()
        before = host.statements()
        chatter.post_message(host, rec, "Hi", subject="S")
        counts.append(host.statements() - before)
    assert counts[1] == counts[2]
    assert len(mails(state="outgoing")) == 306
