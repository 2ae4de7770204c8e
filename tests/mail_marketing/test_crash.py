"""A campaign killed with SIGKILL mid-batch resumes with nobody skipped and nobody mailed
twice: a real process is killed, the queue resumes here, and a real SMTP sink counts."""
import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from postroom.core.clock import UTC
from postroom.plugins.mail_marketing.models import Trace

from .conftest import contacts, drain, make_campaign, make_list, show

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.mark.heavy
def test_a_campaign_killed_mid_batch_resumes_without_skipping_or_repeating(mk, run, sink, tmp_path, clock, db_url):
    total = 300
    host = mk(db_url=db_url, marketing_batch_size=20, marketing_run_limit=20)
    make_list(run, host, tmp_path, "news", contacts(total))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    worker = subprocess.Popen([sys.executable, os.path.join(HERE, "crash_worker.py"), str(tmp_path / "postroom.cfg")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    seen = []
    try:
        for line in worker.stdout:
            seen.append(line.strip())
            if line.startswith("in batch 6 "):
                worker.send_signal(signal.SIGKILL)   # inside batch 6's transaction
                break
    finally:
        worker.kill()
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL, (seen, worker.stderr.read())
    # Five batches committed, the sixth died with its transaction.
    assert Trace.select().where(Trace.campaign == cid).count() == 100
    assert show(run, host, cid)["state"] == "sending"
    # Resume: this process takes over once the dead worker's lease on the action ran out
    # (its clock set to the worker's real time, plus the lease: budget 30 s + 60 s grace).
    clock.set(dt.datetime.now(UTC) + dt.timedelta(minutes=2))
    drain(host)
    assert show(run, host, cid)["state"] == "done"
    received = sink.wait_for(total, timeout=30)
    per_address = Counter(m.rcpt_tos[0] for m in received)
    assert len(received) == total
    assert set(per_address) == {f"user{i}@example.org" for i in range(total)}
    assert max(per_address.values()) == 1
    traces = Counter(t.contact_id for t in Trace.select().where(Trace.campaign == cid))
    assert len(traces) == total and max(traces.values()) == 1
    assert show(run, host, cid)["sent"] == total
