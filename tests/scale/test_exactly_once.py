"""Four worker processes (`postroom serve --workers 4`) drain one queue on PostgreSQL: every
mail arrives exactly once, and a daily limit below the total is exact."""
import collections
import json
import re

import pytest

from postroom.plugins.mail_queue.models import OutgoingMail

from .harness import enqueue, outgoing_left, receipts, wait_until

# The issue asks for 20,000 mails (bench/scale.py drains that many). CI runs on two shared
# cores next to the rest of the suite, so the test drains 5,000: still 100 batches of 50
# claimed by four processes racing on the same rows.
N = 5000


@pytest.mark.heavy
def test_four_workers_deliver_every_queued_mail_exactly_once(deployment, smtp_sink):
    sink = smtp_sink()
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port)
    wanted = enqueue(dep.host, N)
    dep.serve("--workers", "4")
    dep.wait_for_workers(4)
    wait_until(lambda: len(sink.received()) >= N and outgoing_left(dep) == 0, 300, 0.5,
               what=f"{N} mails to be delivered")
    got = receipts(sink)
    assert set(got) == set(wanted)  # nobody lost
    assert {r: ids for r, ids in got.items() if len(ids) > 1} == {}  # nobody twice
    assert {r: ids[0] for r, ids in got.items()} == wanted  # each with its own Message-Id
    # The work was shared: the log (one line per mail, with the sender's pid) shows
    # several of the four worker processes sending, and none of them died.
    pids = set(dep.workers().values())
    sent_by = collections.Counter(int(p) for p in re.findall(r" (\d+) INFO postroom: mail \d+ sent to ", dep.log()))
    assert sum(sent_by.values()) == N
    assert len(pids) == 4 and dep.restarts() == 0
    assert len(set(sent_by) & pids) >= 3, sent_by  # (all four, unless one started late)


@pytest.mark.heavy
def test_a_daily_limit_below_the_total_lets_exactly_that_many_leave(deployment, smtp_sink, cli_run):
    sink = smtp_sink()
    limit, total = 377, 600
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port, daily_limit=limit)
    enqueue(dep.host, total)
    dep.serve("--workers", "4")
    wait_until(lambda: outgoing_left(dep) == 0, 240, 0.5, what="the queue to be processed")
    failed = list(OutgoingMail.select().where(OutgoingMail.state == "exception"))
    kinds = collections.Counter((m.failure_type, (m.failure_reason or "")[:80]) for m in failed)
    assert len(sink.received()) == limit, kinds  # not one more
    assert len(receipts(sink)) == limit
    assert len(failed) == total - limit, kinds
    assert {m.failure_type for m in failed} == {"mail_limit"}, kinds
    assert all("Daily limit reached" in m.failure_reason for m in failed)
    status = json.loads(cli_run(dep.host, "limit", "--json").output)
    assert (status["count"], status["limit"], status["remaining"]) == (limit, limit, 0)
