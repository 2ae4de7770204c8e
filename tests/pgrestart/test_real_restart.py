"""A real PostgreSQL restart (a private server, `pg_ctl stop -m fast|immediate` then
`pg_ctl start`) while two `postroom serve` workers drain the queue and four SMTP clients
write to the gateway: the workers reconnect by themselves, no mail is lost, a duplicate is
only ever a mail that was in flight (at most one per worker, same Message-Id), the gateway
answers 451 while the database is down and every message it accepted with 250 is stored
once."""
import collections
import socket
import time

import pytest

from postroom.plugins.inbound import aliases
from postroom.plugins.mail_queue.models import OutgoingMail
from tests.scale.harness import Deployment, enqueue, outgoing_left, receipts, wait_until
from tests.scale.test_inbound import message, run_clients, stored
from tests.support import pgserver
from tests.support.smtp import free_port, smtp_sink  # noqa: F401 - the fixture

pytestmark = [pytest.mark.heavy,
              pytest.mark.skipif(pgserver.missing() is not None, reason=str(pgserver.missing()))]

MAILS = 1500
INBOUND = 1500  # enough that the clients are still sending when the server stops
CLIENTS = 4
WORKERS = 2
DOWN_SECONDS = 3  # long enough for every worker and client to meet the outage


@pytest.fixture(scope="module")
def private_pg():
    with pgserver.PrivatePostgres() as pg:
        yield pg


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_real_restart_during_a_drain_and_inbound_traffic_loses_nothing(private_pg, make_host, tmp_path,
                                                                         smtp_sink, mode):
    pg = private_pg
    url = pg.create_database(f"restart_{mode}")
    # 10 ms per DATA: the drain lasts several seconds, so the restart lands in the middle.
    sink = smtp_sink(stall_seconds=0.01)
    gateway_port = free_port()
    dep = Deployment(make_host, tmp_path, url, ["mail_queue", "inbound"],
                     {"smtp_host": "127.0.0.1", "smtp_port": sink.port,
                      "inbound_host": "127.0.0.1", "inbound_port": gateway_port,
                      # all four clients are 127.0.0.1; a batch takes 0.5 s, so 8 s is a safe lease
                      "inbound_loop_max_peer": "1000000", "mail_lease_seconds": "8"})
    aliases.add_alias(dep.host, "support", "generic")
    wanted = enqueue(dep.host, MAILS)
    dep.fresh()
    try:
        dep.serve("--role", "scheduler", "--workers", str(WORKERS))
        dep.serve("--role", "inbound")
        wait_until(lambda: listening(gateway_port), 60, what="the gateway to listen")
        items = [message(i) for i in range(INBOUND)]
        clients = run_clients(gateway_port, [items[c::CLIENTS] for c in range(CLIENTS)], 240)

        def accepted_so_far():
            return sum(sum(c.accepted.values()) for c in clients)
        wait_until(lambda: len(sink.received()) >= 150 and accepted_so_far() >= 20, 120, 0.02,
                   what="the drain and the inbound traffic to flow")
        dep.fresh()
        tempfails_before = sum(c.tempfails for c in clients)
        clients_busy = sum(c.is_alive() for c in clients)
        pg.stop(mode)
        sent_at_stop = len(sink.received())
        time.sleep(DOWN_SECONDS)
        tempfails_during = sum(c.tempfails for c in clients) - tempfails_before
        pg.start()

        restarted = time.monotonic()
        wait_until(lambda: outgoing_left(dep) == 0, 180, 0.5, what="the queue to drain after the restart")
        drained = time.monotonic() - restarted
        for c in clients:
            c.join(240)
        joined = time.monotonic() - restarted
    finally:
        dep.stop()

    assert sent_at_stop < MAILS, "the drain had ended before the restart: nothing was proven"
    assert clients_busy == CLIENTS, "the inbound traffic had ended before the restart"
    # The workers rode the outage out themselves: none was restarted by its supervisor.
    assert dep.restarts() == 0, dep.log()[-3000:]
    assert "scheduler loop error; retrying" in dep.log() or "reconnecting" in dep.log()

    # Outgoing: every mail arrived, sent; a second copy only of a mail in flight at the
    # stop (one conversation per worker: at most one mail each), with the same Message-Id.
    dep.fresh()
    # (sent mails are deleted by default, like Odoo's auto_delete: none may be left unsent)
    states = collections.Counter(s for (s,) in OutgoingMail.select(OutgoingMail.state).tuples())
    assert set(states) <= {"sent"}, states
    got = receipts(sink)
    assert set(got) == set(wanted)
    assert all(set(ids) == {wanted[rcpt]} for rcpt, ids in got.items())
    extra = sum(len(ids) - 1 for ids in got.values())
    assert max(len(ids) for ids in got.values()) <= 2
    assert extra <= WORKERS, extra

    # Inbound: 451 while the database was down; all of it accepted in the end, once each.
    assert tempfails_during > 0
    accepted = collections.Counter()
    for c in clients:
        assert c.other == [] and not c.is_alive()
        accepted.update(c.accepted)
    assert set(accepted) == {mid for mid, _, _ in items} and set(accepted.values()) == {1}
    messages, originals = stored(dep, accepted)
    assert messages == accepted and originals == accepted
    print(f"restart -m {mode}: {sent_at_stop} of {MAILS} sent at the stop, {extra} duplicates, "
          f"{tempfails_during} 451s while down; drained {drained:.1f}s and clients done {joined:.1f}s "
          f"after the start; {pg.version()}")
