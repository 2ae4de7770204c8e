"""A worker killed with SIGKILL mid-send loses no mail; its claims are taken over after the
lease, and a mail in flight may leave twice, with the same Message-Id."""
import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest

from postroom.core.clock import UTC
from postroom.plugins.mail_queue import sending
from tests.support.smtp import SMTPSink

from .conftest import mails

WORKER = os.path.join(os.path.dirname(__file__), "crash_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.heavy
def test_a_worker_killed_mid_send_loses_no_mail(mail_host, clock, db_url):
    with SMTPSink(stall_seconds=20, stall_after=3) as hanging:
        host = mail_host(db_url=db_url, smtp_port=hanging.port, mail_lease_seconds=120)
        ids = host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"}
                                            for i in range(8)])
        wanted = {m.id: m.message_id for m in mails()}
        proc = subprocess.Popen([sys.executable, WORKER, host.config.path], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while hanging.attempts < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hanging.attempts >= 4, proc.stderr.read1().decode() if proc.poll() is not None else ""
            os.kill(proc.pid, signal.SIGKILL)  # in the middle of the 4th mail's DATA
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        first = hanging.received()
        assert len(first) == 3
        # The dead worker's claims are still there: nobody may take them before the lease ends.
        leased = mails(state="outgoing")
        assert len(leased) == 8 and all(m.lease_owner for m in leased)
        hanging.stall_seconds = 0
        real_now = dt.datetime.now(UTC)
        clock.advance(seconds=(real_now - clock.now()).total_seconds() + 30)
        assert sending.process_queue(host)["processed"] == 0  # lease still running
        clock.advance(minutes=3)
        sending.process_queue(host)
        got = hanging.wait_for(len(first) + 8)
    assert mails() == []
    by_rcpt = {}
    for r in got:
        by_rcpt.setdefault(r.rcpt_tos[0], set()).add(r.message_id)
    assert len(by_rcpt) == 8  # nobody lost
    assert all(len(mids) == 1 for mids in by_rcpt.values())  # a resend keeps its Message-Id
    assert {next(iter(m)) for m in by_rcpt.values()} == set(wanted.values())
    assert len(ids) == 8
