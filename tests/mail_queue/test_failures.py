"""SMTP failures: permanent at once, temporary with backoff until the lifetime runs out."""
import datetime as dt
import threading

from postroom.core import chatter
from postroom.plugins.mail_queue import outcomes, sending
from tests.support.smtp import SMTPSink, closed_port

from .conftest import MailRecorder, mails, record_with_followers

SENDGRID = "550 The from address does not match a verified Sender Identity"


def _bulk(host, n=1, **extra):
    return host.service("mail").enqueue([dict({"email_to": f"r{i}@example.org", "subject": "S",
                                               "body_html": "<p>b</p>"}, **extra) for i in range(n)])


def test_a_5xx_reply_fails_at_once_with_the_servers_own_words(mail_host, smtp_sink):
    bad = smtp_sink(data_reply=SENDGRID)
    host = mail_host(smtp_port=bad.port)
    rec, _ = record_with_followers(host, "ann@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    [mail] = mails()
    assert mail.state == "exception" and mail.failure_type == "mail_smtp"
    assert mail.failure_reason == ("Mail delivery failed via SMTP server 'default'. SMTPDataError: "
                                   "550 The from address does not match a verified Sender Identity")
    note = chatter.notification_rows(msg)[0]
    assert (note["status"], note["failure_type"], note["failure_reason"]) == (
        "exception", "mail_smtp", mail.failure_reason)
    assert chatter.envelope(msg) == "red"


def test_a_refused_recipient_fails_only_that_mail(mail_host, smtp_sink):
    picky = smtp_sink(rcpt_replies={"bob@example.org": "550 5.1.1 <bob@example.org>: no such user"})
    host = mail_host(smtp_port=picky.port)
    rec, people = record_with_followers(host, "ann@example.org", "bob@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    assert [r.rcpt_tos for r in picky.wait_for(1)] == [["ann@example.org"]]
    status = {n["email"]: (n["status"], n["failure_reason"]) for n in chatter.notification_rows(msg)}
    assert status["ann@example.org"][0] == "sent"
    assert status["bob@example.org"] == ("exception", "Mail delivery failed via SMTP server 'default'. "
                                         "SMTPRecipientsRefused: 550 5.1.1 <bob@example.org>: no such user")


def test_a_refused_sender_is_reported_with_its_reply(mail_host, smtp_sink):
    strict = smtp_sink(mail_reply="553 5.7.1 Sender address rejected")
    host = mail_host(smtp_port=strict.port)
    _bulk(host)
    sending.process_queue(host)
    [mail] = mails()
    assert mail.state == "exception"
    assert "SMTPSenderRefused: 553 5.7.1 Sender address rejected" in mail.failure_reason


def test_a_4xx_reply_is_retried_with_growing_backoff_until_accepted(mail_host, smtp_sink, clock, db_url):
    flaky = smtp_sink(data_reply="451 4.3.0 Try again later", fail_first=2)
    host = mail_host(db_url=db_url, smtp_port=flaky.port, mail_retry_min_minutes=5, mail_retry_max_minutes=60)
    recorder = MailRecorder()
    host.pm.register(recorder)
    _bulk(host, ref="mt7")
    sending.process_queue(host)
    [mail] = mails()
    assert (mail.state, mail.attempts, mail.failure_type) == ("outgoing", 1, "mail_smtp")
    assert "451 4.3.0 Try again later" in mail.failure_reason
    first_wait = mail.next_attempt_at - clock.now()
    assert dt.timedelta(minutes=5) <= first_wait <= dt.timedelta(minutes=5, seconds=1)
    assert recorder.failed[-1]["permanent"] is False and recorder.failed[-1]["ref"] == "mt7"
    # Not due yet: a run now does nothing.
    assert sending.process_queue(host)["processed"] == 0
    clock.advance(minutes=6)
    sending.process_queue(host)
    [mail] = mails()
    second_wait = mail.next_attempt_at - clock.now()
    assert mail.attempts == 2 and dt.timedelta(minutes=5) <= second_wait <= dt.timedelta(minutes=10)
    clock.advance(minutes=11)
    sending.process_queue(host)
    assert len(flaky.received()) == 1 and mails() == []
    assert recorder.sent[-1]["ref"] == "mt7"


def test_the_backoff_stays_between_its_bounds():
    class _Host:
        class config:
            @staticmethod
            def getfloat(key, default):
                return {"mail_retry_min_minutes": 5.0, "mail_retry_max_minutes": 60.0}[key]
    waits = [outcomes.backoff(_Host, n) for n in range(1, 12) for _ in range(20)]
    assert min(waits) >= dt.timedelta(minutes=5) and max(waits) <= dt.timedelta(minutes=60)
    assert len({w for w in waits}) > 20  # jitter spreads retries


def test_a_temporary_failure_past_the_lifetime_goes_to_exception_with_the_last_reason(mail_host, smtp_sink, clock):
    busy = smtp_sink(data_reply="421 4.7.0 Too many connections")
    host = mail_host(smtp_port=busy.port, mail_lifetime_days=1)
    rec, _ = record_with_followers(host, "ann@example.org")
    msg = chatter.post_message(host, rec, "Hi", subject="S")
    for _ in range(40):
        clock.advance(minutes=61)
        sending.process_queue(host)
        if mails()[0].state != "outgoing":
            break
    [mail] = mails()
    assert mail.state == "exception" and "421 4.7.0 Too many connections" in mail.failure_reason
    assert mail.attempts > 3
    assert chatter.notification_rows(msg)[0]["status"] == "exception"


def test_a_refused_connection_is_temporary(mail_host):
    host = mail_host(smtp_port=closed_port())
    _bulk(host)
    sending.process_queue(host)
    [mail] = mails()
    assert mail.state == "outgoing" and mail.next_attempt_at is not None
    assert mail.failure_reason.startswith("Mail delivery failed via SMTP server 'default'. ConnectionRefusedError")


def test_a_server_stalling_before_the_data_times_out_and_the_mail_is_retried(mail_host, smtp_sink):
    slow = smtp_sink(mail_reply_delay=3)
    host = mail_host(smtp_port=slow.port, smtp_timeout=0.5)
    _bulk(host)
    sending.process_queue(host)
    [mail] = mails()
    assert mail.state == "outgoing" and mail.attempts == 1 and mail.doubtful == 0
    assert "timed out" in mail.failure_reason and slow.received() == []


def test_no_answer_to_the_end_of_data_means_may_have_been_delivered_retried_once_with_the_same_id(
        mail_host, smtp_sink, clock):
    slow = smtp_sink(data_delay=2)  # keeps the message, answers the final "." after 2 s
    host = mail_host(smtp_port=slow.port, smtp_timeout=0.5, smtp_data_timeout=0.5)
    _bulk(host)
    [wanted] = [m.message_id for m in mails()]
    sending.process_queue(host)
    [mail] = mails()
    assert mail.state == "outgoing" and mail.doubtful == 1 and mail.next_attempt_at is not None
    assert "may have succeeded" in mail.failure_reason and "0.5 s" in mail.failure_reason
    assert "retried once, later, with the same Message-Id" in mail.failure_reason
    slow.wait_for(1)  # the server did keep it
    clock.advance(hours=2)
    sending.process_queue(host)  # the retry: times out again, so it is not sent a third time
    [mail] = mails()
    assert mail.state == "exception" and mail.doubtful == 2
    assert "not sent again" in mail.failure_reason
    got = slow.wait_for(2)
    assert [r.message_id for r in got] == [wanted, wanted]


def test_a_relay_answering_the_end_of_data_slowly_within_the_data_timeout_delivers_once(mail_host, smtp_sink):
    slow = smtp_sink(data_delay=1.5)  # slower than the command timeout, within the data one
    host = mail_host(smtp_port=slow.port, smtp_timeout=0.5, smtp_data_timeout=10)
    _bulk(host, 2)
    assert sending.process_queue(host)["sent"] == 2
    assert mails() == [] and len(slow.received()) == 2


def test_a_dropped_connection_mid_batch_loses_and_doubles_nothing(mail_host, clock, db_url, smtp_mode):
    with SMTPSink(drop_after=2, pipelining=smtp_mode) as dropping:
        host = mail_host(db_url=db_url, smtp_port=dropping.port)
        ids = _bulk(host, 5)
        sending.process_queue(host)
        assert len(dropping.received()) == 2
        states = {m.id: m.state for m in mails()}
        assert sorted(states.values()) == ["outgoing"] * 3
        assert set(states) == set(ids[2:])
        delivered = {r.rcpt_tos[0] for r in dropping.received()}
    with SMTPSink(port=dropping.port, pipelining=smtp_mode) as healthy:
        clock.advance(hours=2)
        sending.process_queue(host)
        later = {r.rcpt_tos[0] for r in healthy.wait_for(3)}
    assert len(healthy.received()) == 3
    assert delivered.isdisjoint(later) and len(delivered | later) == 5
    assert mails() == []


def test_a_mail_without_sender_fails_with_mail_from_missing(mail_host, sink, cli_run):
    from postroom.plugins.mail_queue.models import OutgoingMail
    host = mail_host()
    [mail_id] = _bulk(host)
    OutgoingMail.update(email_from=None).where(OutgoingMail.id == mail_id).execute()
    sending.process_queue(host)
    [mail] = mails()
    assert (mail.state, mail.failure_type) == ("exception", "mail_from_missing")
    listed = cli_run(host, "queue", "list", "--state", "exception").output
    assert "mail_from_missing" in listed and sink.received() == []
    assert cli_run(host, "queue", "list", "--state", "sent").output.strip() == "(the queue is empty)"


def test_the_last_attempt_of_a_mail_whose_lifetime_ran_out_reports_that_it_failed(mail_host, smtp_sink, clock):
    busy = smtp_sink(data_reply="451 4.3.0 try later")
    host = mail_host(smtp_port=busy.port)
    _bulk(host)
    assert sending.process_queue(host)["retry"] == 1
    clock.advance(days=6)  # past the 5-day lifetime
    result = sending.process_queue(host)
    assert (result["failed"], result["retry"]) == (1, 0)  # what happened, not "retry 2"
    [mail] = mails()
    assert mail.state == "exception" and mail.attempts == 2
    assert "451 4.3.0 try later" in mail.failure_reason and "last attempt" in mail.failure_reason


def test_a_server_trickling_its_greeting_is_cut_off_and_holds_no_other_servers_mail(mail_host, smtp_sink, cli_run):
    from tests.support.smtp import TricklingServer
    healthy = smtp_sink()
    with TricklingServer(interval=0.3) as trickle:
        host = mail_host(smtp_port=healthy.port, smtp_connect_timeout=2)
        assert cli_run(host, "server", "add", "slow", "--host", trickle.host, "--port", trickle.port,
                       "--from-filter", "slow.example.com").exit_code == 0
        host.service("mail").enqueue(
            [{"email_to": f"s{i}@example.org", "subject": "S", "email_from": "news@slow.example.com"} for i in range(2)]
            + [{"email_to": f"h{i}@example.org", "subject": "S"} for i in range(3)])
        results = []
        run = threading.Thread(target=lambda: results.append(sending.process_queue(host)))
        run.start()
        # The healthy server's mails go while the other one is still trickling its greeting
        # (it is cut off after smtp_connect_timeout, 2 s, however steadily bytes come).
        early = healthy.wait_for(3, timeout=1.5)
        still_running = run.is_alive()
        run.join(30)
        assert len(early) == 3 and still_running and trickle.connections == 1
        [result] = results
    assert (result["sent"], result["retry"]) == (3, 2)
    slow = [m for m in mails() if m.email_to.startswith("s")]
    assert {m.state for m in slow} == {"outgoing"}
    assert all("TimeoutError" in m.failure_reason and "'slow'" in m.failure_reason for m in slow)
