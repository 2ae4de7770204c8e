"""Faults while worker processes drain the queue on PostgreSQL: a flapping SMTP server, a
server refusing some recipients, and database connections killed (or the database gone
for a while) under the workers' feet."""
import datetime as dt
import json
import time

import pytest

from tests.support.smtp import free_port

from .harness import BASE_CONFIG, enqueue, outgoing_left, receipts, wait_until

BATCH = int(BASE_CONFIG["mail_batch_size"])
# Backoff bounds short enough for a test with real worker processes (the defaults are 5
# and 60 minutes): every retry waits between 1.2 and 3 seconds.
FAST_RETRY = {"mail_retry_min_minutes": "0.02", "mail_retry_max_minutes": "0.05"}


def queue_list(dep, cli_run) -> list[dict]:
    dep.fresh()
    result = cli_run(dep.host, "queue", "list", "--state", "outgoing", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def backoff_seconds(row) -> float:
    return (dt.datetime.fromisoformat(row["next_attempt_at"])
            - dt.datetime.fromisoformat(row["updated_at"])).total_seconds()


@pytest.mark.heavy
def test_a_flapping_server_gets_every_mail_in_the_end_with_backoff_in_the_queue(deployment, smtp_sink, cli_run):
    port = free_port()  # nothing listens there yet: connections are refused
    dep = deployment(smtp_host="127.0.0.1", smtp_port=port, **FAST_RETRY)
    total = 300
    wanted = enqueue(dep.host, total)
    dep.serve("--workers", "2")

    # 1. Refused: every mail is tried, stays outgoing, and waits for its next attempt.
    def all_tried_once():
        rows = queue_list(dep, cli_run)
        return len(rows) == total and all(r["attempts"] >= 1 and r["next_attempt_at"] for r in rows)
    wait_until(all_tried_once, 120, 0.3, what="every mail to be tried against the refusing server")
    rows = queue_list(dep, cli_run)
    assert all("refused" in r["failure_reason"].lower() for r in rows if r["attempts"] == 1), rows[0]
    assert all(1.2 - 0.01 <= backoff_seconds(r) <= 3.0 + 0.01 for r in rows)

    # 2. The server is up but answers 451 at DATA, then 421 and closes: still temporary.
    sink = smtp_sink(port=port, data_reply="451 4.3.0 Temporary failure, try later")
    wait_until(lambda: sink.attempts >= total, 120, 0.2, what="retries answered 451")
    sink.data_reply = "421 4.3.2 Service shutting down, closing channel"
    seen = sink.attempts
    wait_until(lambda: sink.attempts >= seen + 20, 120, 0.2, what="retries answered 421")
    rows = queue_list(dep, cli_run)
    assert len(rows) == total and sink.received() == []
    reasons = " ".join(r["failure_reason"] for r in rows)
    assert "451 4.3.0" in reasons and ("421 4.3.2" in reasons or "SMTPServerDisconnected" in reasons)
    assert max(r["attempts"] for r in rows) >= 3
    assert all(1.2 - 0.01 <= backoff_seconds(r) <= 3.0 + 0.01 for r in rows if r["next_attempt_at"])

    # 3. It recovers: every mail leaves, once.
    sink.data_reply = None
    wait_until(lambda: outgoing_left(dep) == 0, 120, 0.3, what="the queue to drain after recovery")
    got = receipts(sink)
    assert {r: ids for r, ids in got.items()} == {r: [mid] for r, mid in wanted.items()}
    assert dep.restarts() == 0


@pytest.mark.heavy
def test_recipients_refused_with_550_fail_with_the_reason_and_the_rest_go(deployment, smtp_sink, cli_run):
    total = 200
    bad = {f"r{i}@example.org" for i in range(0, total, 10)}
    sink = smtp_sink(rcpt_replies={b: f"550 5.1.1 <{b}>: Recipient address rejected: User unknown" for b in bad})
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port)
    wanted = enqueue(dep.host, total)
    dep.serve("--workers", "2")
    wait_until(lambda: outgoing_left(dep) == 0, 120, 0.3, what="the queue to be processed")
    got = receipts(sink)
    assert set(got) == set(wanted) - bad and all(len(ids) == 1 for ids in got.values())
    failed = json.loads(cli_run(dep.host, "queue", "list", "--state", "exception", "--json").output)
    assert {r["email_to"] for r in failed} == bad
    for r in failed:
        assert r["failure_type"] == "mail_smtp"
        assert f"550 5.1.1 <{r['email_to']}>: Recipient address rejected: User unknown" in r["failure_reason"]
        assert r["attempts"] == 1  # permanent: not retried


@pytest.mark.heavy
def test_workers_survive_killed_connections_and_a_vanished_database(deployment, smtp_sink):
    sink = smtp_sink()
    dep = deployment(smtp_host=sink.host, smtp_port=sink.port, mail_lease_seconds=8)
    total, workers = 2500, 4
    wanted = enqueue(dep.host, total)
    dep.serve("--workers", str(workers))
    dep.wait_for_workers(workers)
    pids = set(dep.workers().values())
    wait_until(lambda: len(sink.received()) >= 100, 60, 0.05, what="the drain to start")
    killed = 0
    for _ in range(5):  # connections killed under the workers' feet
        killed += dep.terminate_backends()
        time.sleep(0.4)
    dep.database_away(True)  # the database is gone for three seconds
    during = len(sink.received())
    time.sleep(3)
    assert len(sink.received()) - during <= workers * BATCH  # only batches already claimed
    dep.database_away(False)
    assert killed > 0
    wait_until(lambda: outgoing_left(dep) == 0 and len(receipts(sink)) == total, 240, 0.5,
               what="every mail to be delivered after the database came back")
    got = receipts(sink)
    assert set(got) == set(wanted)
    for rcpt, ids in got.items():
        assert set(ids) == {wanted[rcpt]}
    twice = [r for r, ids in got.items() if len(ids) > 1]
    # A killed connection costs nothing: the worker records its batch on a new connection.
    # While the database is gone a sent mail's outcome waits for it (up to the lease); the
    # bound still allows one batch per worker, and one more for a kill landing on that very
    # reconnection.
    assert len(twice) <= 2 * workers * BATCH
    # The same processes carried on: they reconnected, nobody had to restart them.
    assert dep.restarts() == 0 and set(dep.workers().values()) == pids
    # ...and they did meet the outage: a claim failed in the scheduler loop, or the
    # recording of a sent mail's outcome waited for the database (which of the two a
    # worker meets first depends on where in its batch the kill lands).
    log = dep.log()
    assert "scheduler loop error; retrying" in log or "reconnecting until the database answers" in log
