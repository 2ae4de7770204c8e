"""The operator's commands: mail send, queue list/show/retry/send-now/cancel/export/process,
message resend/ignore."""
import datetime as dt
import email
import email.policy
import json

from postroom.core import chatter
from postroom.plugins.mail_queue import claims, sending

from .conftest import mails, record_with_followers

FIELDS = {"id", "state", "failure_type", "failure_reason", "email_to", "subject", "message_id",
          "attempts", "next_attempt_at"}


def test_mail_send_is_urgent_and_prints_each_new_id(mail_host, sink, cli_run):
    host = mail_host()
    result = cli_run(host, "mail", "send", "--to", "ann@example.org", "--to", "Bob <bob@example.org>",
                     "--subject", "Hello", "--body", "Hi!")
    assert result.exit_code == 0, result.output
    ids = [int(line.split()[-1]) for line in result.output.splitlines()]
    assert len(ids) == 2
    got = sink.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in got) == ["ann@example.org", "bob@example.org"]
    assert got[0].message["From"] == "Administrator <admin@example.com>"  # the admin partner
    assert [m.state for m in mails()] == ["sent", "sent"]  # kept (a direct mail), shown as sent
    assert result.output.splitlines()[0].startswith("mail to ann@example.org: sent")
    cli_run(host, "mail", "send", "--to", "cy@example.org", "--subject", "S", "--body", "b", "--auto-delete")
    assert len(sink.wait_for(3)) == 3 and len(mails()) == 2


def test_mail_send_bulk_waits_for_the_queue_and_at_waits_for_its_time(mail_host, sink, cli_run, clock):
    host = mail_host()
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "S", "--body", "b", "--bulk")
    at = (clock.now() + dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    cli_run(host, "mail", "send", "--to", "bob@example.org", "--subject", "S", "--body", "b", "--at", at)
    assert sink.received() == []
    listing = json.loads(cli_run(host, "queue", "list", "--json").output)
    assert [r["state"] for r in listing] == ["outgoing", "outgoing"]
    assert FIELDS <= set(listing[0])
    from postroom.core.models import CronTrigger
    assert any(t.call_at == clock.now() + dt.timedelta(hours=3) for t in CronTrigger.select())
    assert "processed 1" in cli_run(host, "queue", "process").output
    assert [r.rcpt_tos[0] for r in sink.wait_for(1)] == ["ann@example.org"]
    clock.advance(hours=3)
    cli_run(host, "queue", "process")
    assert len(sink.wait_for(2)) == 2


def test_mail_send_refuses_bad_input_with_one_line(mail_host, sink, cli_run):
    host = mail_host()
    for args in (["--to", "not an address"], ["--to", "a@example.org", "--from", "x\r\nBcc: e@example.net"],
                 ["--to", "a@example.org", "--at", "tomorrow"]):
        result = cli_run(host, "mail", "send", "--subject", "S", "--body", "b", *args)
        assert result.exit_code != 0
        assert result.output.count("\n") == 1 and result.output.startswith("Error:")
    result = cli_run(host, "mail", "send", "--to", "a@example.org", "--subject", "Hi\nBcc: e@example.net", "--body", "b")
    assert result.exit_code != 0 and "header injection" in result.output
    assert mails() == [] and sink.received() == []


def test_queue_show_retry_and_send_now(mail_host, smtp_sink, cli_run):
    bad = smtp_sink(data_reply="554 5.7.1 Relay denied")
    host = mail_host(smtp_port=bad.port)
    failed = cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "S", "--body", "b")
    assert failed.exit_code == 1 and "554 5.7.1 Relay denied" in failed.output
    [mail] = mails()
    shown = json.loads(cli_run(host, "queue", "show", str(mail.id), "--json").output)
    assert shown["state"] == "exception" and "554 5.7.1 Relay denied" in shown["failure_reason"]
    assert FIELDS <= set(shown)
    text = cli_run(host, "queue", "show", str(mail.id)).output
    assert "Relay denied" in text
    bad.data_reply = None  # the operator fixed the server
    assert cli_run(host, "queue", "retry", str(mail.id)).exit_code == 0
    assert mails()[0].state == "outgoing" and mails()[0].failure_reason is None
    result = cli_run(host, "queue", "send-now", str(mail.id))
    assert result.exit_code == 0 and "sent" in result.output
    assert len(bad.wait_for(1)) == 1


def test_queue_retry_all_failed_and_cancel(mail_host, smtp_sink, cli_run):
    bad = smtp_sink(data_reply="550 no")
    host = mail_host(smtp_port=bad.port)
    rec, _ = record_with_followers(host, "a@example.org", "b@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    assert len(mails(state="exception")) == 2
    assert "2 mail(s) back" in cli_run(host, "queue", "retry", "--all-failed").output
    assert {n["status"] for n in chatter.notification_rows(msg)} == {"ready"}
    ids = [str(m.id) for m in mails()]
    assert cli_run(host, "queue", "cancel", *ids).exit_code == 0
    assert {m.state for m in mails()} == {"cancel"}
    assert {n["status"] for n in chatter.notification_rows(msg)} == {"canceled"}
    assert chatter.envelope(msg) == "white"
    again = cli_run(host, "queue", "send-now", ids[0])
    assert again.exit_code != 0 and "cancel" in again.output
    missing = cli_run(host, "queue", "show", "999")
    assert missing.exit_code != 0 and "no outgoing mail with id 999" in missing.output


def test_queue_export_is_the_message_that_was_sent(mail_host, sink, cli_run):
    host = mail_host()
    cli_run(host, "mail", "send", "--to", "Zoë Ünïcode <zoe@example.org>", "--subject", "Réunion — café ☕",
            "--body", "Bonjour Zoë", "--from", "Åsa Öberg <asa@example.com>")
    [received] = sink.wait_for(1)
    [mail] = mails()
    exported = cli_run(host, "queue", "export", str(mail.id)).stdout_bytes
    assert exported == received.data  # byte for byte what went over the wire
    parsed = email.message_from_bytes(exported, policy=email.policy.default)
    assert parsed["Message-Id"] == received.message_id == mail.message_id
    assert parsed["Subject"] == "Réunion — café ☕"
    assert parsed["To"].addresses[0].display_name == "Zoë Ünïcode"
    assert parsed["From"].addresses[0].display_name == "Åsa Öberg"
    assert parsed.get_body(("plain",)).get_content().strip() == "Bonjour Zoë"
    assert exported.isascii()  # encoded: 7-bit safe headers and body


def test_message_resend_with_a_corrected_address_and_others_ignored(mail_host, smtp_sink, cli_run, db_url):
    picky = smtp_sink(rcpt_replies={"ann@exmaple.org": "550 5.1.2 bad domain",
                                    "bob@example.org": "550 5.1.1 gone"})
    host = mail_host(db_url=db_url, smtp_port=picky.port)
    rec, _ = record_with_followers(host, "ann@exmaple.org", "bob@example.org", "cy@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    assert chatter.envelope(msg) == "red"
    result = cli_run(host, "message", "resend", str(msg.id), "--only", "ann@exmaple.org",
                     "--fix", "ann@exmaple.org=ann@example.org")
    assert result.exit_code == 0, result.output
    assert "resent to ann@example.org" in result.output and "ignored bob@example.org" in result.output
    got = picky.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in got) == ["ann@example.org", "cy@example.org"]
    assert all(r.message_id == msg.message_id for r in got)
    status = {n["email"]: n["status"] for n in chatter.notification_rows(msg)}
    assert status == {"ann@example.org": "sent", "bob@example.org": "canceled", "cy@example.org": "sent"}
    assert chatter.envelope(msg) == "white"


def test_resending_to_one_recipient_cancels_the_others_mails_so_a_later_retry_all_mails_nobody_twice(
        mail_host, smtp_sink, cli_run):
    picky = smtp_sink(rcpt_replies={"ann@example.org": "550 5.1.1 full", "bob@example.org": "550 5.1.1 gone"})
    host = mail_host(smtp_port=picky.port)
    rec, _ = record_with_followers(host, "ann@example.org", "bob@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    before = {m.email_to: (m.id, m.message_id) for m in mails()}
    assert {m.state for m in mails()} == {"exception"}
    picky.rcpt_replies = {}
    assert cli_run(host, "message", "resend", str(msg.id), "--only", "ann@example.org").exit_code == 0
    [bob] = mails()  # ann's mail went (and, auto_delete, is gone); bob's is canceled, not left failed
    assert (bob.email_to, bob.state, bob.id) == ("bob@example.org", "cancel", before["bob@example.org"][0])
    assert "0 mail(s) back to outgoing" in cli_run(host, "queue", "retry", "--all-failed").output
    sending.process_queue(host)
    assert [(r.rcpt_tos, r.message_id) for r in picky.received()] == [
        (["ann@example.org"], before["ann@example.org"][1])]
    assert chatter.envelope(msg) == "white"


def test_message_resend_refuses_a_recipient_that_did_not_fail(mail_host, sink, cli_run):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    result = cli_run(host, "message", "resend", str(msg.id))
    assert result.exit_code != 0 and "no failed recipient" in result.output


def test_message_ignore_turns_the_envelope_white(mail_host, smtp_sink, cli_run):
    bad = smtp_sink(data_reply="550 no")
    host = mail_host(smtp_port=bad.port)
    rec, _ = record_with_followers(host, "a@example.org", "b@example.org")
    one = chatter.post_message(host, rec, "1", subject="S")
    two = chatter.post_message(host, rec, "2", subject="S")
    assert "ignored 2" in cli_run(host, "message", "ignore", str(one.id)).output
    assert chatter.envelope(one) == "white" and chatter.envelope(two) == "red"
    assert cli_run(host, "mail", "ignore", "--all").exit_code == 0
    assert chatter.envelope(two) == "white"
    assert {m.state for m in mails()} == {"cancel"}
    assert cli_run(host, "message", "ignore").exit_code != 0


def test_queue_process_runs_the_queue_once(mail_host, sink, cli_run):
    host = mail_host()
    host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(3)])
    out = json.loads(cli_run(host, "queue", "process", "--json").output)
    assert out["sent"] == 3 and out["remaining"] == 0
    assert sending.process_queue(host)["processed"] == 0


def test_a_mail_being_sent_cannot_be_canceled(mail_host, sink, cli_run):
    host = mail_host()
    [mail_id] = host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "S"}])
    claims.claim(host, "another-worker", 10)
    result = cli_run(host, "queue", "cancel", mail_id)
    assert result.exit_code != 0 and "being sent right now" in result.output
    assert mails()[0].state == "outgoing"


def test_queue_list_shows_the_newest_mails_last_and_limit_keeps_the_newest(mail_host, cli_run):
    host = mail_host()
    host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(5)])
    rows = json.loads(cli_run(host, "queue", "list", "--limit", "3", "--json").output)
    assert [r["email_to"] for r in rows] == ["r2@example.org", "r3@example.org", "r4@example.org"]
