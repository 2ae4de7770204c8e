"""postroom_vacuum and postroom_doctor_checks of mail_queue."""
import datetime as dt
import subprocess

from postroom.core import chatter
from postroom.plugins.mail_queue import actions, daily_limit, maintenance, sending
from tests.support.smtp import closed_port

from .conftest import mails, record_with_followers


def _statuses(checks):
    """The queue's own checks (the signing checks have their own tests: test_dkim_doctor)."""
    return {c.name: c.status for c in checks if c.name.startswith("mail.")}


def test_vacuum_removes_old_sent_and_canceled_mails_but_never_pending_or_failing(mail_host, smtp_sink, clock, db_url):
    bad = smtp_sink(data_reply="550 no")
    host = mail_host(db_url=db_url, smtp_port=bad.port)
    service = host.service("mail")
    rec, _ = record_with_followers(host, "a@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")  # exception, red envelope
    failing = mails(state="exception")[0].id
    service.enqueue([{"email_to": "b@example.org", "auto_delete": False}])  # will fail too (550)
    sending.process_queue(host)
    bad.data_reply = None
    kept_sent = service.enqueue([{"email_to": f"k{i}@example.org", "auto_delete": False} for i in range(5)])
    sending.process_queue(host)
    assert {m.state for m in mails(state="sent")} == {"sent"}
    outgoing = service.enqueue([{"email_to": "later@example.org",
                                 "scheduled_at": clock.now() + dt.timedelta(days=60)}])
    cancelled = service.enqueue([{"email_to": "c@example.org"}])
    actions.cancel(host, cancelled)
    clock.advance(days=31)
    dry = maintenance.vacuum(host, 2, True)
    assert dry == {"removed": {"mails": 6, "counters": 0}, "remaining": 0}
    assert len(mails(state="sent")) == 5
    first = maintenance.vacuum(host, 2, False)
    assert first["removed"]["mails"] == 2 and first["remaining"] == 1
    while (result := maintenance.vacuum(host, 2, False)) and result["remaining"]:
        pass
    left = {m.id: m.state for m in mails()}
    assert failing in left and outgoing[0] in left  # failing and still-to-send mail stays
    assert not set(kept_sent) & set(left) and cancelled[0] not in left
    # Once the failure is dealt with (ignored), the failed mail may go after 30 days.
    actions.ignore(host, [msg.id])
    clock.advance(days=31)
    maintenance.vacuum(host, 100, False)
    assert failing not in {m.id for m in mails()}
    assert maintenance.vacuum(host, 100, False) is None


def test_doctor_reports_server_limit_failures_and_interval(mail_host, sink, cli_run):
    host = mail_host(daily_limit=10)
    checks = maintenance.doctor_checks(host)
    assert _statuses(checks) == {"mail.server": "ok", "mail.sender": "ok", "mail.daily_limit": "ok",
                                 "mail.failures": "ok", "mail.queue_interval": "ok"}
    host.service("mail").enqueue([{"email_to": f"r{i}@example.org"} for i in range(9)]
                                 + [{"email_to": "broken"}])
    sending.process_queue(host)
    checks = {c.name: c for c in maintenance.doctor_checks(host)}
    assert checks["mail.daily_limit"].status == "warn" and "9 of 10" in checks["mail.daily_limit"].finding
    assert checks["mail.failures"].status == "warn" and "1 mail_email_invalid" in checks["mail.failures"].finding
    cli_run(host, "cron", "set-interval", "Mail: Email Queue Manager", "5m")
    assert _statuses(maintenance.doctor_checks(host))["mail.queue_interval"] == "warn"


def test_doctor_fails_when_no_server_answers(mail_host, clock):
    host = mail_host(smtp_port=closed_port())
    checks = {c.name: c for c in maintenance.doctor_checks(host)}
    assert checks["mail.server"].status == "fail" and "server add" in checks["mail.server"].remedy
    clock.advance(hours=3)
    assert _statuses(maintenance.doctor_checks(host))["mail.queue_interval"] == "warn"  # not run on time


def test_doctor_says_when_the_limit_is_reached(mail_host, sink):
    host = mail_host(daily_limit=1)
    host.service("mail").enqueue([{"email_to": "a@example.org"}])
    sending.process_queue(host)
    assert daily_limit.limit_status(host)["count"] == 1
    assert _statuses(maintenance.doctor_checks(host))["mail.daily_limit"] == "fail"


def test_doctor_fails_when_the_default_sender_cannot_send(make_host, sink):
    host = make_host(plugins=["mail_queue"], config={"domains": "localhost", "smtp_host": sink.host,
                                                     "smtp_port": sink.port})
    checks = {c.name: c for c in maintenance.doctor_checks(host)}
    assert checks["mail.sender"].status == "fail" and "notifications@localhost" in checks["mail.sender"].finding


def test_a_failing_email_queue_manager_is_never_deactivated_and_doctor_fails_from_the_first_failure(
        mail_host, clock, cli_run):
    from postroom.core import scheduler
    from postroom.core.models import CronAction
    from postroom.plugins.mail_queue.settings import ACTION_CODE
    host = mail_host()
    host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "S"}])
    host.db.execute_sql('DROP TABLE "mail_queue_daily_count"')  # a broken database: every run fails
    scheduler.run_due(host)
    assert CronAction.get(CronAction.code == ACTION_CODE).failure_count == 1
    result = cli_run(host, "doctor")
    assert result.exit_code != 0 and "failed its last 1 run(s)" in result.output
    for _ in range(6):  # failing for 12 days, far past the five-in-a-week rule
        clock.advance(days=2)
        scheduler.run_due(host)
    row = CronAction.get(CronAction.code == ACTION_CODE)
    assert row.active and row.failure_count == 7


def test_one_grep_for_a_message_id_shows_the_mails_whole_life(mail_host, smtp_sink, clock, tmp_path):
    busy = smtp_sink(fail_first=1, data_reply="451 4.3.0 try later")
    host = mail_host(smtp_port=busy.port)
    [mail_id] = host.service("mail").enqueue([{"email_to": "ann@example.org", "subject": "S",
                                                 "auto_delete": False}])
    [mail] = mails()
    sending.process_queue(host)   # 451: retried later
    clock.advance(hours=2)
    sending.process_queue(host)   # sent
    clock.advance(days=40)
    maintenance.vacuum(host, 100, False)  # kept sent mail past its retention: deleted
    assert mails() == []
    # The log rotated meanwhile (daily, older days gzip-compressed): zgrep reads them all.
    found = subprocess.run(["zgrep", "-h", "-F", mail.message_id, *sorted(map(str, (tmp_path / "logs").iterdir()))],
                           capture_output=True, text=True, check=True)
    lines = found.stdout.splitlines()
    assert all(f"mail {mail_id} " in line for line in lines)
    story = " | ".join(lines)
    for step in ("enqueued to ann@example.org", "failed (mail_smtp, retry 1)", "sent to ann@example.org",
                 "deleted by the auto-vacuum"):
        assert step in story, story
