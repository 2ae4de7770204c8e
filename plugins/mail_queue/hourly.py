"""The 24-hour chart of the queue screen: mails sent, failed for good and waiting, per hour.

Sent and failed are events, counted in `HourlyCount` by the batch that recorded them (an
auto-deleted mail leaves no row in the queue to count later, and grouping a 100,000-mail
queue by hour on every page view costs more than the page). Waiting is the queue as it is
now: the outgoing mails by the hour they were created, read through the (state,
created_at) index.
"""
import collections
import datetime as dt

import peewee as pw

from postroom.core.db import is_postgres

from .models import HourlyCount, OutgoingMail

HOURS = 24
KEEP = dt.timedelta(days=31)  # the vacuum removes older hours


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def count_hour(host, sent: int, failed: list[dict]) -> None:
    """Add a batch's sent mails and its permanent failures (`failed`: the dicts
    postroom_mail_failed gets) to the current hour; one upsert, inside the caller's
    transaction (the one that counts the outcomes for /metrics)."""
    counts = collections.Counter(sent=sent, failed=sum(1 for info in failed if info["permanent"]))
    hour = hour_of(host.clock.now())
    rows = [{"hour": hour, "outcome": outcome, "count": n} for outcome, n in counts.items() if n]
    if rows:
        (HourlyCount.insert_many(rows)
         .on_conflict(conflict_target=[HourlyCount.hour, HourlyCount.outcome],
                      update={HourlyCount.count: HourlyCount.count + pw.EXCLUDED.count})
         .execute())


def chart(host) -> list[dict]:
    """One entry per hour of the last 24, oldest first: {hour, sent, failed, waiting}.
    Two statements whatever the size of the queue."""
    now = hour_of(host.clock.now())
    since = now - dt.timedelta(hours=HOURS - 1)
    hours = [since + dt.timedelta(hours=i) for i in range(HOURS)]
    events = collections.defaultdict(dict)
    for hour, outcome, n in (HourlyCount.select(HourlyCount.hour, HourlyCount.outcome, HourlyCount.count)
                             .where(HourlyCount.hour >= since).tuples()):
        events[hour][outcome] = n
    waiting = _waiting_by_hour(host, since)
    return [{"hour": h, "sent": events[h].get("sent", 0), "failed": events[h].get("failed", 0),
             "waiting": waiting.get(h.strftime("%Y-%m-%d %H"), 0)} for h in hours]


def _waiting_by_hour(host, since) -> dict:
    """{"YYYY-MM-DD HH": outgoing mails created in that hour}."""
    column = OutgoingMail.created_at
    if is_postgres(host.db):
        bucket = pw.fn.date_trunc("hour", column).coerce(False)  # cheaper per row than to_char
    else:  # stored as "YYYY-MM-DD HH:MM:SS": the hour is a prefix (kept text, not read as a time)
        bucket = pw.fn.substr(column, 1, 13).coerce(False)
    rows = (OutgoingMail.select(bucket.alias("h"), pw.fn.COUNT(pw.SQL("*")))
            .where((OutgoingMail.state == "outgoing") & (column >= since))
            .group_by(pw.SQL("1")).tuples())  # by position: PostgreSQL binds each copy of bucket apart
    return {h if isinstance(h, str) else h.strftime("%Y-%m-%d %H"): n for h, n in rows}


def vacuum_condition(host):
    """Hours the chart will never show again (kept a month, for whoever reads the table)."""
    return HourlyCount.hour < hour_of(host.clock.now()) - KEEP
