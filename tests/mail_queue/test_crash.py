"""kill -9, SIGSTOP and SIGTERM of real queue workers (`crash_worker.py`, `postroom serve`):
no mail is lost, a crash repeats at most the one mail that was in the middle of its
conversation (with the same Message-Id), a paused worker repeats none, and SIGTERM is
honoured within seconds even while a server stalls."""
import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from postroom.core.clock import SystemClock
from postroom.plugins.mail_queue import journal
from postroom.plugins.mail_queue.models import OutcomeJournal, OutgoingMail
from tests.support.smtp import SMTPSink, TricklingServer
from tests.support.waiting import wait_until

WORKER = os.path.join(os.path.dirname(__file__), "crash_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _host(make_host, db_url, sink, **config):
    values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5",
              "mail_lease_seconds": "2", "mail_batch_size": "50", "daily_limit": "1000000",
              "mail_retry_min_minutes": "0.02", "mail_from": "shop@example.com"}
    values.update({k: str(v) for k, v in config.items()})
    return make_host(plugins=["mail_queue"], db_url=db_url, config=values, clock_=SystemClock())


def _enqueue(host, n):
    ids = host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": f"News {i}",
                                         "body_html": f"<p>{i}</p>"} for i in range(n)])
    return {m.email_to: m.message_id for m in OutgoingMail.select().where(OutgoingMail.id.in_(ids))}


def _worker(host, *args):
    return subprocess.Popen([sys.executable, WORKER, host.config.path, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _left(host):
    host.db.close()  # a fresh connection sees the workers' commits
    return OutgoingMail.select().where(OutgoingMail.state == "outgoing").count()


def _drain(host, timeout=90):
    """Run workers until no mail is left outgoing (in-doubt mails wait a short backoff)."""
    deadline = time.monotonic() + timeout
    while _left(host) and time.monotonic() < deadline:
        proc = _worker(host)
        assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:]
        time.sleep(0.3)
    assert _left(host) == 0


def _receipts(sink):
    got = collections.defaultdict(list)
    for r in sink.received():
        got[r.rcpt_tos[0]].append(r.message_id)
    return got


def _in_flight(host):
    """Recipients of the mails a killed worker had in the middle of a conversation (marked in
    flight in the outcome journal, or by `sending_since`, and not answered)."""
    host.db.close()
    ids = journal.in_flight()
    return {m.email_to for m in OutgoingMail.select().where(OutgoingMail.id.in_(ids or [0]))}


KILLS = 3
N = 400


@pytest.mark.heavy
def test_each_kill_of_a_draining_worker_repeats_at_most_one_mail_with_the_same_message_id(make_host, db_url):
    with SMTPSink(pipelining=True) as sink:
        host = _host(make_host, db_url, sink)
        wanted = _enqueue(host, N)
        windows = []
        for k in range(KILLS):
            before = len(sink.received())
            proc = _worker(host)
            wait_until(lambda: len(sink.received()) >= before + 40 or proc.poll() is not None, 60,
                       interval=0.02, what="the worker to send some mails")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            windows.append(_in_flight(host))
            assert len(windows[-1]) <= 1  # one mail in flight at a time
            time.sleep(2.5)  # its lease (2 s) runs out: the next worker takes its mails over
        _drain(host)
        got = _receipts(sink)
    assert set(got) == set(wanted)  # nobody lost
    assert all(set(ids) == {wanted[r]} for r, ids in got.items())  # a repeat keeps its Message-Id
    twice = {r for r, ids in got.items() if len(ids) > 1}
    per_kill = [len(twice & w) for w in windows]
    print(f"duplicates per kill ({db_url.split(':')[0]}): {per_kill}")
    assert all(len(got[r]) == 2 for r in twice)
    assert twice <= set().union(*windows)  # every repeat was the mail in flight at a kill
    assert all(n <= 1 for n in per_kill) and len(twice) <= KILLS


@pytest.mark.heavy
def test_a_worker_killed_mid_batch_leaves_its_sent_mails_in_the_journal_and_the_next_resends_only_the_one_in_flight(
        make_host, db_url, cli_run):
    # One claim of 60 mails, killed after about 20: what it sent is only in the outcome
    # journal (the batch never ended), yet the listing says sent, and the next worker
    # applies the journal before it takes the claim over.
    with SMTPSink(pipelining=True, data_delay=0.02) as sink:
        host = _host(make_host, db_url, sink, mail_lease_seconds=3, mail_batch_size=60)
        ids = host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": f"News {i}",
                                             "body_html": f"<p>{i}</p>", "auto_delete": False}
                                            for i in range(60)])
        wanted = {m.email_to: m.message_id for m in OutgoingMail.select().where(OutgoingMail.id.in_(ids))}
        proc = _worker(host)
        wait_until(lambda: len(sink.received()) >= 20 or proc.poll() is not None, 60, interval=0.02, what="the worker to send 20 mails")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        host.db.close()
        delivered = {r.rcpt_tos[0] for r in sink.received()}
        flying = {m.email_to for m in OutgoingMail.select().where(OutgoingMail.id.in_(journal.in_flight() or [0]))}
        assert len(flying) <= 1
        rows = {m.email_to: m for m in OutgoingMail.select()}
        journaled = {m.email_to for m in OutgoingMail.select().join(
            OutcomeJournal, on=(OutcomeJournal.mail_id == OutgoingMail.id)).where(OutcomeJournal.outcome == "sent")}
        assert len(journaled) >= 15 and journaled <= delivered
        assert all(rows[r].state == "outgoing" and rows[r].lease_owner for r in journaled)  # not applied yet
        listed = {r["email_to"]: r for r in json.loads(cli_run(host, "queue", "list", "--json").output)}
        applied = {r for r, m in rows.items() if m.state == "sent"}  # written directly (at a lease renewal)
        assert {r for r, row in listed.items() if row["state"] == "sent"} == journaled | applied  # as the operator sees it
        assert all(listed[r]["server"] and listed[r]["sent_at"] for r in journaled)
        one = sorted(journaled)[0]
        shown = json.loads(cli_run(host, "queue", "show", str(rows[one].id), "--json").output)
        assert shown["state"] == "sent"
        time.sleep(3.5)  # its lease runs out: the next worker takes the claim over
        _drain(host)
        got = _receipts(sink)
        host.db.close()
        states = {m.email_to: m.state for m in OutgoingMail.select()}
        left_in_journal = OutcomeJournal.select().count()
    assert set(got) == set(wanted)
    assert all(set(mids) == {wanted[r]} for r, mids in got.items())  # a repeat keeps its Message-Id
    twice = {r for r, mids in got.items() if len(mids) > 1}
    print(f"re-sent after a kill mid-batch ({db_url.split(':')[0]}): {sorted(twice)}, in flight: {sorted(flying)}")
    assert twice <= flying and not twice & (journaled | applied)  # nothing recorded as sent went again
    assert set(states.values()) == {"sent"} and left_in_journal == 0


@pytest.mark.heavy
def test_two_workers_and_a_slow_relay_never_send_a_mail_twice(make_host, db_url):
    # Each mail takes 0.1 s, so a batch of 20 outlives the 1 s lease: only the renewal
    # keeps the other worker from taking the batch over.
    with SMTPSink(pipelining=True, data_delay=0.1) as sink:
        host = _host(make_host, db_url, sink, mail_lease_seconds=1, mail_batch_size=20)
        wanted = _enqueue(host, 80)
        procs = [_worker(host), _worker(host)]
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read().decode()[-2000:]
        _drain(host)
        got = _receipts(sink)
    assert {r: ids for r, ids in got.items()} == {r: [mid] for r, mid in wanted.items()}


@pytest.mark.heavy
def test_a_worker_paused_past_its_lease_and_resumed_sends_nothing_twice(make_host, db_url):
    with SMTPSink(pipelining=True, data_delay=0.05) as sink:
        host = _host(make_host, db_url, sink, mail_lease_seconds=1.5, mail_batch_size=40,
                     mail_retry_min_minutes=0.2)
        wanted = _enqueue(host, 120)
        paused = _worker(host)
        wait_until(lambda: len(sink.received()) >= 10, 60, interval=0.02, what="the first worker to start sending")
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            time.sleep(2)  # past its lease
            other = _worker(host)  # takes the paused worker's batch over
            wait_until(lambda: len(sink.received()) >= 60 or other.poll() is not None, 60, interval=0.02, what="the takeover")
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        assert paused.wait(60) == 0, paused.stderr.read().decode()[-2000:]
        assert other.wait(60) == 0, other.stderr.read().decode()[-2000:]
        _drain(host)
        got = _receipts(sink)
    twice = {r: ids for r, ids in got.items() if len(ids) > 1}
    print(f"duplicates after a pause past the lease ({db_url.split(':')[0]}): {len(twice)}")
    assert set(got) == set(wanted) and twice == {}


@pytest.mark.heavy
def test_sigterm_is_honoured_within_seconds_while_a_server_trickles_its_greeting(make_host, tmp_path):
    with TricklingServer(interval=0.5) as trickle:
        host = make_host(plugins=["mail_queue"], config={
            "smtp_host": trickle.host, "smtp_port": trickle.port, "smtp_connect_timeout": "120",
            "serve_poll_seconds": "0.2", "mail_from": "shop@example.com"}, clock_=SystemClock())
        _enqueue(host, 3)
        env = dict(os.environ, POSTROOM_CONFIG=host.config.path)
        proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: trickle.connections >= 1, 60, interval=0.02, what="the worker to connect")
            time.sleep(1)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert time.monotonic() - t0 < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert _left(host) == 3  # nothing lost: the mails wait for the next run
