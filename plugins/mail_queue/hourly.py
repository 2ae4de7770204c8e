"""The 24-hour chart of the queue screen: mails sent, failed for good and waiting, per hour.

Sent and failed are events, counted in `HourlyCount` by the batch that recorded them (an
auto-deleted mail leaves no row in the queue to count later, and grouping a 100,000-mail
queue by hour on every page view costs more than the page). Waiting is the queue as it is
now: the outgoing mails by the hour they were created, counted on the (state, created_at)
index.
"""
import collections
import datetime as dt

import peewee as pw

from postroom.core.clock import aware
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
    waiting = _waiting_by_hour(host, hours)
    return [{"hour": h, "sent": events[h].get("sent", 0), "failed": events[h].get("failed", 0),
             "waiting": waiting.get(h, 0)} for h in hours]


def _waiting_by_hour(host, hours) -> dict:
    """{hour: outgoing mails created in that hour}, on the (state, created_at) index, in one
    statement. SQLite: a range count per hour (UNION ALL; 1 ms at 100,000 mails against 3-20
    ms for reading the hour out of every waiting mail and grouping), written out as SQL since
    peewee takes longer to build 24 branches than SQLite to run them. PostgreSQL: grouped by
    date_trunc over one bitmap scan. Per-hour counts would be index-only scans there only on
    pages autovacuum marked all-visible, which the queue's waiting mails, just written and
    soon updated, seldom are: each then fetches its heap rows one by one (60 ms against 14)."""
    M, step = OutgoingMail, dt.timedelta(hours=1)
    if is_postgres(host.db):
        bucket = pw.fn.date_trunc("hour", M.created_at).coerce(False)
        rows = (M.select(bucket, pw.fn.COUNT(pw.SQL("*")))
                .where((M.state == "outgoing") & (M.created_at >= hours[0]))
                .group_by(pw.SQL("1")).tuples())  # by position: PostgreSQL binds each copy apart
        return {aware(h): n for h, n in rows}
    # Exactly one lower bound per branch: given two, SQLite may start the range at the
    # earlier one and read every hour before the branch's own.
    branch = ('SELECT {i}, COUNT(*) FROM "mail_queue_mail" '
              'WHERE "state" = ? AND "created_at" >= ? AND "created_at" < ?')
    sql = " UNION ALL ".join(branch.format(i=i) for i in range(len(hours)))
    params = [value for h in hours for value in ("outgoing", M.created_at.db_value(h), M.created_at.db_value(h + step))]
    return {hours[i]: n for i, n in host.db.execute_sql(sql, params).fetchall()}


def vacuum_condition(host):
    """Hours the chart will never show again (kept a month, for whoever reads the table)."""
    return HourlyCount.hour < hour_of(host.clock.now()) - KEEP
