"""mail_queue's families for `/metrics`: the queue by state and age, and the counters of
send outcomes by failure type and SMTP reply class. Two GROUP BY queries per scrape."""
import collections
import re

import peewee as pw
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from postroom.core.metrics import age_buckets

from .models import OutcomeCount, OutgoingMail

# smtp_reason: "Mail delivery failed via SMTP server 'x'. SMTPDataError: 550 5.1.1 ..."
_REPLY = re.compile(r"^Mail delivery failed via SMTP server '.*?'\. \w+: ([2-5])\d\d\b")


def reply_class(reason: str | None) -> str:
    """`4xx` / `5xx` from a failure reason in the server's words, `none` when no server
    answered (refused connection, timeout, an address refused before sending)."""
    match = _REPLY.match(reason or "")
    return f"{match.group(1)}xx" if match else "none"


def count_outcomes(sent: int, failed: list[dict]) -> None:
    """Add a delivery's outcomes to the counters (`failed`: the dicts postroom_mail_failed
    gets), one upsert for the whole delivery. Runs inside the transaction that records
    them, so the counts are exactly the recorded ones."""
    counts = collections.Counter()
    counts[("sent", "", "2xx")] += sent
    for info in failed:
        key = ("failed" if info["permanent"] else "retry", info["failure_type"] or "unknown",
               reply_class(info["failure_reason"]))
        counts[key] += 1
    rows = [{"outcome": o, "failure_type": f, "reply_class": r, "count": n}
            for (o, f, r), n in counts.items() if n]
    if rows:
        (OutcomeCount.insert_many(rows)
         .on_conflict(conflict_target=[OutcomeCount.outcome, OutcomeCount.failure_type,
                                       OutcomeCount.reply_class],
                      update={OutcomeCount.count: OutcomeCount.count + pw.EXCLUDED.count})
         .execute())


def families(host) -> list:
    now = host.clock.now()
    depth = GaugeMetricFamily("postroom_mail_queue_mails",
                              "Outgoing mails in the queue table by state and age since enqueued "
                              "(age: under 5m, 1h, 1d, or older)", labels=["state", "age"])
    age = age_buckets(OutgoingMail.created_at, now)
    for state, bucket, n in (OutgoingMail.select(OutgoingMail.state, age.alias("age"), pw.fn.COUNT(OutgoingMail.id))
                             # by position: PostgreSQL sees the CASE's parameters as new values
                             .group_by(pw.SQL("1"), pw.SQL("2")).tuples()):
        depth.add_metric([state, bucket], n)
    outcomes = CounterMetricFamily("postroom_mail_queue_attempts",
                                   "Send attempts by outcome (sent, failed for good, retry), failure "
                                   "type and SMTP reply class", labels=["outcome", "failure_type", "reply_class"])
    for o, f, r, n in OutcomeCount.select(OutcomeCount.outcome, OutcomeCount.failure_type,
                                          OutcomeCount.reply_class, OutcomeCount.count).tuples():
        outcomes.add_metric([o, f, r], n)
    return [depth, outcomes]
