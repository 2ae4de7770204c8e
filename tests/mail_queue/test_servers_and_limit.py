"""Outgoing servers (add/list/test, from_filter choice) and the exact daily limit."""
import datetime as dt
import json
import threading

import pytest

from postroom.core.plugins import hookimpl
from postroom.plugins.mail_queue import daily_limit, sending, servers
from tests.support.smtp import SMTPSink, closed_port

from .conftest import mails


def _enqueue(host, n, email_from=None, bulk=True):
    return host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S",
                                          "email_from": email_from, "bulk": bulk} for i in range(n)])


def test_server_add_list_and_test(mail_host, sink, cli_run):
    host = mail_host()
    out = cli_run(host, "server", "add", "relay", "--host", sink.host, "--port", sink.port,
                  "--from-filter", "example.com", "--daily-limit", "50").output
    assert out.split()[-1].isdigit()
    rows = json.loads(cli_run(host, "server", "list", "--json").output)
    assert [(r["name"], r["from_filter"], r["daily_limit"], r["default"]) for r in rows] == [
        ("relay", "example.com", 50, False), ("default", None, 200, True)]
    result = cli_run(host, "server", "test", "relay")
    assert result.exit_code == 0 and "250" in result.output
    dup = cli_run(host, "server", "add", "relay", "--host", "x", "--port", "25")
    assert dup.exit_code != 0 and "already exists" in dup.output
    bad = cli_run(host, "server", "add", "other", "--host", "x", "--port", "99999")
    assert bad.exit_code != 0


def test_server_test_fails_loudly_when_nothing_answers(mail_host, cli_run):
    host = mail_host(smtp_port=closed_port())
    result = cli_run(host, "server", "test")
    assert result.exit_code == 1 and "ConnectionRefusedError" in result.output
    assert cli_run(host, "server", "test", "nope").exit_code != 0


def test_the_default_server_comes_from_the_config():
    from postroom.core.config import Config
    from postroom.plugins.mail_queue.settings import KEYS

    class _H:
        config = Config({})
    _H.config.declare(KEYS, "mail_queue")
    assert (servers.default_server(_H).host, servers.default_server(_H).port) == ("127.0.0.1", 25)


def test_server_choice_follows_from_filter(mail_host, sink, cli_run):
    host = mail_host()
    with SMTPSink() as exact, SMTPSink() as domain, SMTPSink() as anyone:
        cli_run(host, "server", "add", "exact", "--host", exact.host, "--port", exact.port,
                "--from-filter", "sales@shop.example")
        cli_run(host, "server", "add", "domain", "--host", domain.host, "--port", domain.port,
                "--from-filter", "shop.example")
        _enqueue(host, 1, "sales@shop.example")
        _enqueue(host, 1, "info@shop.example")
        _enqueue(host, 1, "me@elsewhere.example")
        sending.process_queue(host)
        assert len(exact.received()) == 1 and len(domain.received()) == 1
        assert len(sink.received()) == 1  # no unfiltered added server: the config's default
        cli_run(host, "server", "add", "anyone", "--host", anyone.host, "--port", anyone.port)
        _enqueue(host, 1, "me@elsewhere.example")
        sending.process_queue(host)
        assert len(anyone.received()) == 1


def test_past_the_daily_limit_mail_fails_with_mail_limit_and_a_clear_reason(mail_host, sink, cli_run, db_url):
    host = mail_host(db_url=db_url, daily_limit=3)
    _enqueue(host, 5)
    sending.process_queue(host)
    assert len(sink.received()) == 3
    failed = mails(state="exception")
    assert len(failed) == 2 and {m.failure_type for m in failed} == {"mail_limit"}
    assert failed[0].failure_reason.startswith("Daily limit reached: 3 emails sent today")
    assert "resets at 2026-01-06 00:00 UTC" in failed[0].failure_reason
    out = cli_run(host, "limit").output
    assert "3 of 3 emails sent today" in out and "2026-01-06 00:00" in out
    status = json.loads(cli_run(host, "limit", "--json").output)
    assert (status["count"], status["limit"], status["remaining"]) == (3, 3, 0)


def test_the_count_resets_the_next_utc_day(mail_host, sink, clock):
    host = mail_host(daily_limit=1)
    _enqueue(host, 1)
    sending.process_queue(host)
    clock.advance(hours=15)  # 2026-01-06 00:00
    _enqueue(host, 1)
    sending.process_queue(host)
    assert len(sink.received()) == 2 and daily_limit.limit_status(host)["count"] == 1


def test_urgent_mail_counts_too(mail_host, sink):
    host = mail_host(daily_limit=1)
    _enqueue(host, 2, bulk=False)
    assert len(sink.received()) == 1
    assert [m.failure_type for m in mails(state="exception")] == ["mail_limit"]


def test_mail_through_an_added_server_without_limit_does_not_count(mail_host, sink, cli_run):
    host = mail_host(daily_limit=1)
    cli_run(host, "server", "add", "own", "--host", sink.host, "--port", sink.port)
    _enqueue(host, 4)
    sending.process_queue(host)
    assert len(sink.received()) == 4 and daily_limit.limit_status(host)["count"] == 0


def test_a_failed_attempt_gives_its_slot_back(mail_host, smtp_sink):
    bad = smtp_sink(data_reply="550 nope")
    host = mail_host(smtp_port=bad.port, daily_limit=5)
    _enqueue(host, 2)
    sending.process_queue(host)
    assert daily_limit.limit_status(host)["count"] == 0


@pytest.mark.heavy
def test_the_daily_limit_is_exact_with_concurrent_workers_on_postgresql(pg_database, mail_host, sink, make_host):
    host = mail_host(db_url=pg_database, daily_limit=25, mail_batch_size=3)
    _enqueue(host, 60)
    errors = []

    def worker():
        # One host, one PostgreSQL connection per thread (peewee keeps connections per
        # thread): four workers claiming and counting at once.
        try:
            sending.process_queue(host)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            host.db.close()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(sink.received()) == 25
    assert daily_limit.limit_status(host)["count"] == 25
    assert len(mails(state="exception")) == 35
    assert {m.failure_type for m in mails(state="exception")} == {"mail_limit"}
    assert len({r.rcpt_tos[0] for r in sink.received()}) == 25  # nobody mailed twice


@pytest.mark.heavy
def test_the_daily_limit_is_exact_with_worker_processes_on_postgresql(pg_database, mail_host, sink):
    import os
    import subprocess
    import sys

    from postroom.plugins.mail_queue.models import DailyCount
    host = mail_host(db_url=pg_database, daily_limit=20, mail_batch_size=4)
    _enqueue(host, 50)
    worker = os.path.join(os.path.dirname(__file__), "crash_worker.py")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    procs = [subprocess.Popen([sys.executable, worker, host.config.path], cwd=root,
                              stdout=subprocess.DEVNULL) for _ in range(3)]
    assert all(p.wait(60) == 0 for p in procs)
    assert len(sink.received()) == 20
    assert len({r.rcpt_tos[0] for r in sink.received()}) == 20
    assert sum(c.count for c in DailyCount.select()) == 20
    assert len(mails(state="exception")) == 30


def test_an_added_server_with_its_own_limit_counts_separately(mail_host, sink, cli_run):
    host = mail_host(daily_limit=100)
    cli_run(host, "server", "add", "capped", "--host", sink.host, "--port", sink.port, "--daily-limit", "2")
    _enqueue(host, 3)
    sending.process_queue(host)
    assert len(sink.received()) == 2
    [failed] = mails(state="exception")
    assert failed.failure_type == "mail_limit" and "server 'capped' (limit 2)" in failed.failure_reason
    out = cli_run(host, "limit").output.splitlines()
    assert out[0].startswith("0 of 100") and out[1].startswith("2 of 2 emails sent today") and "server capped" in out[1]
    data = json.loads(cli_run(host, "limit", "--json").output)
    assert data["count"] == 0 and [s["server"] for s in data["servers"]] == ["default", "capped"]


def test_a_server_that_cannot_do_what_it_is_configured_for_fails_its_test(mail_host, sink, cli_run):
    host = mail_host()
    cli_run(host, "server", "add", "tls", "--host", sink.host, "--port", sink.port, "--encryption", "starttls")
    result = cli_run(host, "server", "test", "tls")
    assert result.exit_code == 1 and "STARTTLS" in result.output
    assert result.output.startswith("Error: server tls") and result.output.count("\n") == 1
    _enqueue(host, 1)
    sending.process_queue(host)
    [mail] = mails()
    assert mail.state == "outgoing" and "Mail delivery failed via SMTP server 'tls'." in mail.failure_reason


class _MidnightStrikes:
    """Moves the clock past midnight UTC while the 3rd mail of a batch is being prepared."""

    def __init__(self, clock):
        self.clock, self.seen = clock, 0

    @hookimpl(optionalhook=True)  # mail_queue's own hook
    def postroom_mail_prepare(self, host, mail, message):
        self.seen += 1
        if self.seen == 3:
            self.clock.advance(seconds=2)


def test_the_daily_limit_stays_exact_across_midnight_and_limited_mails_go_by_themselves_next_day(
        mail_host, smtp_sink, clock):
    from postroom.plugins.mail_queue.models import DailyCount
    refusing = smtp_sink(rcpt_replies={f"r{i}@example.org": "550 5.1.1 gone" for i in (5, 6, 7, 8)})
    clock.advance(seconds=(dt.datetime(2026, 1, 5, 23, 59, 59, tzinfo=dt.timezone.utc) - clock.now()).total_seconds())
    host = mail_host(smtp_port=refusing.port, daily_limit=10, extra=[_MidnightStrikes(clock)])
    host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(12)])
    sending.process_queue(host)
    counts = {d.day: d.count for d in DailyCount.select()}
    # 10 slots taken on the 5th; 4 refused after midnight are given back to the 5th, not the 6th.
    assert counts == {"2026-01-05": 6, "2026-01-06": 0} or counts == {"2026-01-05": 6}
    assert len(refusing.received()) == 6
    limited = mails(failure_type="mail_limit")
    assert len(limited) == 2 and {m.state for m in limited} == {"exception"}
    sending.process_queue(host)  # the next run, on the 6th: the count has reset
    assert len(refusing.received()) == 8 and mails(failure_type="mail_limit") == []
    assert {d.day: d.count for d in DailyCount.select()}["2026-01-06"] == 2
