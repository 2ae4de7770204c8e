"""mail_domain_concurrency end to end: two real worker processes (`postroom queue process`)
drain one queue into a real SMTP server on loopback that is slow for one domain and
records, per recipient domain, how many deliveries it is in the middle of at once."""
import asyncio
import collections
import os
import subprocess
import sys
import threading
import time

from aiosmtpd.controller import Controller

from postroom.core import records
from postroom.core.clock import SystemClock
from postroom.testing import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLOW, SLOW_SECONDS = "slow.example", 0.4


class CountingSink:
    """Accepts every message; DATA for SLOW takes SLOW_SECONDS. Records the most
    deliveries in progress at once per domain, and each message's arrival."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = collections.Counter()
        self.most = collections.Counter()
        self.most_overall = 0
        self.arrived = []  # (monotonic time, recipient, Message-Id)
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)

    async def handle_DATA(self, server, session, envelope):
        [rcpt] = envelope.rcpt_tos
        domain = rcpt.rpartition("@")[2].lower()
        with self.lock:
            self.in_flight[domain] += 1
            self.most[domain] = max(self.most[domain], self.in_flight[domain])
            self.most_overall = max(self.most_overall, sum(self.in_flight.values()))
        try:
            if domain == SLOW:
                await asyncio.sleep(SLOW_SECONDS)
            message_id = next((line.split(b":", 1)[1].strip().decode() for line in envelope.content.splitlines()
                               if line.lower().startswith(b"message-id:")), None)
            with self.lock:
                self.arrived.append((time.monotonic(), rcpt, message_id))
        finally:
            with self.lock:
                self.in_flight[domain] -= 1
        return "250 2.0.0 OK queued"


def test_two_workers_keep_a_domain_under_its_concurrency_while_the_others_flow(make_host, db_url):
    sink = CountingSink()
    sink.controller.start()
    try:
        host = make_host(plugins=["mail_queue"], db_url=db_url, clock_=SystemClock(), config={
            "smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_timeout": 10,
            "mail_domain_concurrency": f"{SLOW}=1", "mail_batch_size": 8, "daily_limit": 100000})
        records.ensure_admin(host, "admin@example.com")
        slow = [f"s{i:02d}@{SLOW}" for i in range(10)]
        fast = [f"f{i:02d}@fast{i % 2}.example" for i in range(60)]
        mixed = [a for group in zip(slow, fast[0::6], fast[1::6], fast[2::6], fast[3::6], fast[4::6], fast[5::6])
                 for a in group]
        ids = host.service("mail").enqueue([{"email_to": a, "subject": "News", "body_html": "<p>Hi</p>",
                                             "auto_delete": False} for a in mixed])
        from postroom.plugins.mail_queue.models import OutgoingMail as M
        message_ids = {m.message_id for m in M.select(M.message_id)}
        env = dict(os.environ, PYTHONPATH=ROOT)
        workers = [subprocess.Popen([sys.executable, "-m", "postroom.cli", "--config", host.config.path,
                                     "queue", "process"], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        sink.controller.stop()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err.decode()

    # The limit held for the slow domain, whatever the two workers did...
    assert sink.most[SLOW] == 1
    # ...while both workers were delivering at once (other domains beside a slow delivery).
    assert sink.most_overall >= 2
    # Every mail arrived, once.
    recipients = sorted(rcpt for _, rcpt, _ in sink.arrived)
    assert recipients == sorted(mixed)
    assert sorted(mid for _, _, mid in sink.arrived) == sorted(message_ids)
    assert M.select().where((M.id.in_(ids)) & (M.state == "sent")).count() == len(mixed)
    # The other domains did not queue behind the slow one: all of them were in before
    # the slow domain's last mail.
    last_slow = max(at for at, rcpt, _ in sink.arrived if rcpt.endswith("@" + SLOW))
    assert max(at for at, rcpt, _ in sink.arrived if not rcpt.endswith("@" + SLOW)) < last_slow
