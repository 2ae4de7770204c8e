"""Campaign life: create, send, schedule, cancel, test copies, show, retry-failed, bad input."""
import json

from postroom.core.models import Record

from .conftest import contacts, drain, make_campaign, make_list, show


def test_campaign_mails_carry_unsubscribe_and_bulk_headers_and_a_text_part(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(2))
    cid = make_campaign(run, host, tmp_path, "news", subject="Spring news",
                        body="<h1>Spring</h1><p>New <b>range</b> out.</p>")
    run(host, "campaign", "send", cid)
    drain(host)
    for received in sink.wait_for(2):
        msg = received.message
        assert msg["Subject"] == "Spring news"
        assert msg["Precedence"] == "bulk" and msg["Auto-Submitted"] == "auto-generated"
        assert msg["List-Unsubscribe"].startswith("<mailto:unsubscribe+t")
        assert "@example.com" in msg["List-Unsubscribe"]
        text = msg.get_body(preferencelist=("plain",)).get_content()
        assert "New range out." in text and "<b>" not in text
        assert "<b>range</b>" in msg.get_body(preferencelist=("html",)).get_content()
        assert received.mail_from.startswith("bounce+mt")
    # Every recipient's unsubscribe token differs (it is per recipient).
    assert len({r.message["List-Unsubscribe"] for r in sink.received()}) == 2


def test_states_go_draft_in_queue_sending_done(mk, run, tmp_path):
    host = mk(marketing_batch_size=2, marketing_run_limit=2)
    make_list(run, host, tmp_path, "news", contacts(5))
    cid = make_campaign(run, host, tmp_path, "news")
    assert show(run, host, cid)["state"] == "draft"
    run(host, "campaign", "send", cid)
    assert show(run, host, cid)["state"] == "in_queue"
    from postroom.core import scheduler
    scheduler.run_by_hand(host, "Mail Marketing: Process queue")
    data = show(run, host, cid)
    assert data["state"] == "sending" and data["pending"] == 3 and data["expected"] == 5
    drain(host)
    assert show(run, host, cid)["state"] == "done"


def test_send_triggers_the_process_queue_at_once_not_at_its_daily_time(mk, run, sink, tmp_path, clock):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    drain(host)  # the daily action has run today; its next call is tomorrow
    cid = make_campaign(run, host, tmp_path, "news")
    clock.advance(minutes=10)
    run(host, "campaign", "send", cid)
    drain(host)
    assert show(run, host, cid)["state"] == "done"
    assert len(sink.wait_for(1)) == 1


def test_a_scheduled_campaign_waits_for_its_time_then_goes(mk, run, sink, tmp_path, clock):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(2))
    drain(host)
    cid = make_campaign(run, host, tmp_path, "news")
    result = run(host, "campaign", "schedule", cid, "--at", "2026-01-05T15:00")
    assert "2026-01-05 15:00 UTC" in result.output
    clock.advance(hours=5, minutes=59)
    drain(host)
    assert show(run, host, cid)["state"] == "in_queue" and sink.received() == []
    clock.advance(minutes=1)
    drain(host)
    assert show(run, host, cid)["state"] == "done"
    assert len(sink.wait_for(2)) == 2


def test_a_schedule_time_in_the_past_warns_and_goes_at_the_next_run(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    cid = make_campaign(run, host, tmp_path, "news")
    result = run(host, "campaign", "schedule", cid, "--at", "2020-01-01T00:00")
    assert "in the past" in result.stderr
    drain(host)
    assert show(run, host, cid)["state"] == "done" and len(sink.wait_for(1)) == 1


def test_bad_schedule_times_and_ids_are_refused_in_one_line(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    cid = make_campaign(run, host, tmp_path, "news")
    assert "not an ISO date-time" in run(host, "campaign", "schedule", cid, "--at", "tomorrow",
                                         expect_fail=True).stderr
    assert "no campaign with id 99" in run(host, "campaign", "send", "99", expect_fail=True).stderr
    assert "must be a number" in run(host, "campaign", "show", "x", expect_fail=True).stderr
    assert show(run, host, cid)["state"] == "draft"


def test_cancel_returns_a_queued_campaign_to_draft_and_refuses_a_sending_one(mk, run, tmp_path):
    host = mk(marketing_batch_size=1, marketing_run_limit=1)
    make_list(run, host, tmp_path, "news", contacts(3))
    cid = make_campaign(run, host, tmp_path, "news")
    assert "only a campaign in the queue" in run(host, "campaign", "cancel", cid, expect_fail=True).stderr
    run(host, "campaign", "send", cid)
    assert "back to draft" in run(host, "campaign", "cancel", cid).output
    assert show(run, host, cid)["state"] == "draft"
    run(host, "campaign", "send", cid)
    from postroom.core import scheduler
    scheduler.run_by_hand(host, "Mail Marketing: Process queue")
    result = run(host, "campaign", "cancel", cid, expect_fail=True)
    assert "is sending (1 recipients already processed)" in result.stderr
    assert "cannot be canceled" in result.stderr
    assert show(run, host, cid)["state"] == "sending"
    drain(host)
    assert "is done" in run(host, "campaign", "cancel", cid, expect_fail=True).stderr
    assert "not draft" in run(host, "campaign", "send", cid, expect_fail=True).stderr


def test_a_test_copy_goes_out_at_once_and_counts_nowhere(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(2))
    cid = make_campaign(run, host, tmp_path, "news", subject="Trial")
    result = run(host, "campaign", "test", cid, "--to", "boss@example.net")
    assert "boss@example.net" in result.output
    got = sink.wait_for(1)
    assert got[0].rcpt_tos == ["boss@example.net"] and got[0].message["Subject"] == "Trial"
    data = show(run, host, cid)
    assert data["state"] == "draft" and data["sent"] == 0 and data["outgoing"] == 0
    assert "not a valid email" in run(host, "campaign", "test", cid, "--to", "x", expect_fail=True).stderr


def test_a_campaign_to_an_empty_list_finishes_done_with_zero_sent(mk, run, sink, tmp_path):
    host = mk()
    run(host, "list", "create", "empty")
    cid = make_campaign(run, host, tmp_path, "empty")
    run(host, "campaign", "send", cid)
    drain(host)
    data = show(run, host, cid)
    assert data["state"] == "done" and data["expected"] == 0 and data["sent"] == 0
    assert data["sent_ratio"] == 0.0 and sink.received() == []


def test_create_refuses_bad_input_and_writes_nothing(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    bad = tmp_path / "latin1.html"
    bad.write_bytes("<p>Caf\xe9</p>".encode("latin-1"))
    good = tmp_path / "body.html"
    good.write_text("<p>Hi</p>")
    base = ["campaign", "create", "--subject", "S"]
    assert "not valid UTF-8" in run(host, *base, "--body-file", str(bad), "--list", "news", expect_fail=True).stderr
    assert "cannot read" in run(host, *base, "--body-file", str(tmp_path / "none.html"), "--list", "news",
                                expect_fail=True).stderr
    assert "no mailing list 'nope'" in run(host, *base, "--body-file", str(good), "--list", "news",
                                           "--list", "nope", expect_fail=True).stderr
    assert "not a valid email" in run(host, *base, "--body-file", str(good), "--list", "news",
                                      "--from", "bad", expect_fail=True).stderr
    assert "subject is empty" in run(host, "campaign", "create", "--subject", " ", "--body-file", str(good),
                                     "--list", "news", expect_fail=True).stderr
    assert json.loads(run(host, "campaign", "list", "--json").output) == []
    assert Record.select().where(Record.model == "mailing.campaign").count() == 0


def test_campaign_list_shows_every_campaign_in_creation_order(mk, run, tmp_path, clock):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    first = make_campaign(run, host, tmp_path, "news", subject="One")
    clock.advance(days=1)
    second = make_campaign(run, host, tmp_path, "news", subject="Two")
    rows = json.loads(run(host, "campaign", "list", "--json").output)
    assert [(r["id"], r["subject"], r["state"]) for r in rows] == [(first, "One", "draft"), (second, "Two", "draft")]
    assert "One" in run(host, "campaign", "list").output


def test_retry_failed_requeues_only_the_recipients_in_error(mk, run, sink, tmp_path):
    sink.rcpt_replies = {"user1@example.org": "550 5.1.1 no such user"}
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(3))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    data = show(run, host, cid)
    assert (data["sent"], data["error"], data["error_ratio"]) == (2, 1, 33.3)
    assert "draft" in run(host, "campaign", "retry-failed", make_campaign(run, host, tmp_path, "news", subject="X"),
                          expect_fail=True).stderr
    sink.rcpt_replies = {}
    sink.clear()
    assert "1 failed recipients re-queued" in run(host, "campaign", "retry-failed", cid).output
    drain(host)
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["user1@example.org"]]
    data = show(run, host, cid)
    assert (data["sent"], data["error"]) == (3, 0)
    assert "0 failed recipients" in run(host, "campaign", "retry-failed", cid).output


def test_the_error_trace_keeps_the_failure_type(mk, run, sink, tmp_path):
    sink.rcpt_replies = {"user0@example.org": "550 5.1.1 no such user"}
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    from postroom.plugins.mail_marketing.models import Trace
    trace = Trace.get()
    assert trace.status == "error" and trace.failure_type == "mail_smtp"
    assert "550" in trace.failure_reason


def test_show_prints_counts_with_ratios(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(4))
    run(host, "blacklist", "add", "user0@example.org")
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    out = run(host, "campaign", "show", cid).output
    assert "sent                3 (75.0%)" in out
    assert "canceled_by_reason  blacklisted 1" in out


def test_retry_failed_then_retry_all_failed_mails_each_recipient_once_with_its_own_message_id(mk, run, sink, tmp_path):
    # The doctor's remedy for the daily limit (queue retry --all-failed) right after a
    # campaign's retry-failed: the same failed mails go again, never a second copy.
    sink.rcpt_replies = {f"user{i}@example.org": "550 5.1.1 no such user" for i in range(3)}
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(4))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    failed = json.loads(run(host, "queue", "list", "--state", "exception", "--json").output)
    assert len(failed) == 3
    sink.rcpt_replies = {}
    sink.clear()
    assert "3 failed recipients re-queued" in run(host, "campaign", "retry-failed", cid).output
    run(host, "queue", "retry", "--all-failed")
    waiting = json.loads(run(host, "queue", "list", "--state", "outgoing", "--json").output)
    assert sorted(m["id"] for m in waiting) == sorted(m["id"] for m in failed)  # the same rows
    drain(host)
    got = sink.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in sink.received()) == [f"user{i}@example.org" for i in range(3)]
    assert {r.message_id for r in got} == {m["message_id"] for m in failed}
    assert (show(run, host, cid)["sent"], show(run, host, cid)["error"]) == (4, 0)
