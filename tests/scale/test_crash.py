"""kill -9 of worker processes while four of them drain the queue: the supervisor restarts
each one, no mail is lost, and every duplicate is the mail a killed process was in the
middle of sending (at most one per kill: outcomes are recorded per mail), with the same
Message-Id."""
import os
import random
import signal
import time

import pytest

from postroom.plugins.mail_queue import journal
from postroom.plugins.mail_queue.models import OutgoingMail

from .harness import enqueue, hostname, outgoing_left, receipts, wait_until

N = 3000          # the 20,000 scaled down for CI (see test_exactly_once)
KILLS = 4


def in_flight(dep, pid) -> set[str]:
    """Recipients of the mails `pid` was in the middle of sending (marked in flight in the
    outcome journal or by `sending_since`, outcome not yet recorded): one per conversation, so at most one here (a single server)."""
    dep.fresh()
    prefix = f"mail:{hostname()}:{pid}:"
    ids = journal.in_flight(OutgoingMail.lease_owner.startswith(prefix))
    return {m.email_to for m in OutgoingMail.select(OutgoingMail.email_to).where(OutgoingMail.id.in_(ids or [0]))}


def busy_workers(dep) -> list[int]:
    dep.fresh()
    owners = {o for (o,) in OutgoingMail.select(OutgoingMail.lease_owner).distinct()
              .where((OutgoingMail.state == "outgoing") & OutgoingMail.lease_owner.is_null(False)).tuples()}
    pids = set(dep.workers().values())
    return sorted({int(o.split(":")[2]) for o in owners} & pids)


@pytest.mark.heavy
def test_killing_workers_mid_drain_loses_no_mail_and_resends_only_what_was_in_flight(deployment, smtp_sink):
    sink = smtp_sink()
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port, mail_lease_seconds=10)
    wanted = enqueue(dep.host, N)
    dep.serve("--workers", "4")
    dep.wait_for_workers(4)
    rng = random.Random(7)
    windows = []  # per kill: the recipients the victim had in flight
    for k in range(KILLS):
        wait_until(lambda: len(busy_workers(dep)) > 0, 60, 0.02, what="a worker holding mails")
        victim = rng.choice(busy_workers(dep))
        os.kill(victim, signal.SIGKILL)
        windows.append(in_flight(dep, victim))
        # (2 when it had just taken over a dead worker's in-doubt mail; empty between mails)
        assert len(windows[-1]) <= 2
        # The supervisor brings a new worker up in place of the dead one.
        wait_until(lambda: dep.restarts() == k + 1 and victim not in dep.workers().values(), 60,
                   what=f"worker {victim} to be restarted")
        time.sleep(0.5)
    assert sum(map(len, windows)) > 0  # the kills did hit mails in flight
    # The dead workers' claims are taken over once their lease (10 s) runs out.
    wait_until(lambda: outgoing_left(dep) == 0 and len(receipts(sink)) == N, 300, 0.5,
               what="every mail to be delivered")
    got = receipts(sink)
    assert set(got) == set(wanted)  # no mail lost
    for rcpt, ids in got.items():
        assert set(ids) == {wanted[rcpt]}  # a resent mail keeps its Message-Id
    twice = {r for r, ids in got.items() if len(ids) > 1}
    per_kill, seen = [], set()  # each duplicate counted for the first kill it was in flight at
    for window in windows:
        per_kill.append(len((twice & window) - seen))
        seen |= window
    print(f"duplicates per kill (4 workers, {dep.host.db.engine}): {per_kill}")
    assert all(len(got[r]) == 2 for r in twice)
    assert all(n <= 1 for n in per_kill) and len(twice) <= KILLS, per_kill
    assert twice <= set().union(*windows), twice - set().union(*windows)
    assert dep.restarts() == KILLS


@pytest.mark.heavy
def test_sigterm_stops_a_worker_after_its_batch_and_leaves_no_claim_behind(deployment, smtp_sink):
    sink = smtp_sink()
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port)
    wanted = enqueue(dep.host, N)
    first = dep.serve()  # one plain `postroom serve`, no supervisor
    wait_until(lambda: len(sink.received()) >= 100, 60, 0.02, what="the drain to start")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0  # it finished the batch in hand, not the whole queue
    left = outgoing_left(dep)
    assert 0 < left <= N - 100
    held = OutgoingMail.select().where(OutgoingMail.lease_owner.is_null(False)
                                       & (OutgoingMail.state == "outgoing")).count()
    assert held == 0  # its batch was recorded: nothing waits for a lease, nothing goes twice
    assert len(sink.received()) == N - left
    dep.serve()
    wait_until(lambda: outgoing_left(dep) == 0, 120, 0.3, what="a new worker to finish the queue")
    got = receipts(sink)
    assert {r: ids for r, ids in got.items()} == {r: [mid] for r, mid in wanted.items()}
