"""The queue's 24-hour chart: each hour's mails sent and failed for good, counted as the
sending records them (auto-deleted mails included), and the mails waiting by the hour they
were queued; hours older than the chart's 24 drop out. On each engine."""
import datetime as dt

import pytest

from postroom.plugins.mail_queue.hourly import chart
from postroom.plugins.mail_queue.models import HourlyCount, OutgoingMail
from tests.support.smtp import SMTPSink


@pytest.fixture
def sink():
    with SMTPSink(rcpt_replies={"gone@example.org": "550 5.1.1 no such user",
                                "busy@example.org": "451 4.3.0 try later"}) as server:
        yield server


def by_hour(host):
    return {c["hour"].hour: (c["sent"], c["failed"], c["waiting"]) for c in chart(host)}


def test_the_chart_counts_sent_and_failed_mails_per_hour_and_waiting_ones_by_age(make_host, db_url, clock,
                                                                               cli_run, sink):
    host = make_host(plugins=["mail_queue"], db_url=db_url,
                     config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5"})
    for to in ("ann@example.org", "bob@example.org", "cid@example.org", "gone@example.org",
               "busy@example.org"):
        cli_run(host, "mail", "send", "--to", to, "--subject", "s", "--body", "b", "--auto-delete")  # sent at once
    # The three sent mails were auto-deleted: the chart counts them all the same.
    assert OutgoingMail.select().where(OutgoingMail.state == "sent").count() == 0
    assert len(sink.messages) == 3
    now = clock.now()
    clock.advance(hours=3)
    for n in range(2):
        cli_run(host, "mail", "send", "--to", f"later{n}@example.org", "--subject", "s", "--body", "b", "--bulk")
    chart_now = by_hour(host)
    assert len(chart_now) == 24 and chart(host)[-1]["hour"] == clock.now().replace(minute=0, second=0, microsecond=0)
    # sent 3, failed for good 1 (the 550); the 451 is retried: neither failed nor sent yet,
    # it waits in the hour it was queued, beside the two bulk mails queued three hours later.
    assert chart_now[now.hour] == (3, 1, 1)
    assert chart_now[clock.now().hour] == (0, 0, 2)
    assert sum(s + f for s, f, _ in chart_now.values()) == 4

    clock.advance(hours=22)  # the first hour is now 25 hours old: out of the chart
    later = by_hour(host)
    assert sum(s + f for s, f, _ in later.values()) == 0
    assert later[(now + dt.timedelta(hours=3)).hour] == (0, 0, 2)


def test_the_vacuum_removes_hours_older_than_a_month(make_host, db_url, clock, cli_run, sink):
    host = make_host(plugins=["mail_queue", "auto_vacuum"], db_url=db_url,
                     config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5"})
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "s", "--body", "b")
    clock.advance(days=20)
    cli_run(host, "mail", "send", "--to", "bob@example.org", "--subject", "s", "--body", "b")
    clock.advance(days=12)
    cli_run(host, "vacuum")
    kept = clock.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=12)
    assert [(row.hour, row.outcome, row.count) for row in HourlyCount.select()] == [(kept, "sent", 1)]
