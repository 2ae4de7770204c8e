"""A relay whose certificate stops verifying while a real `postroom serve` drains the queue:
the relay (STARTTLS, trusted through smtp_ca_file) takes the first mails, then switches to
a certificate nobody trusts and ends the connection the queue was reusing, in the middle of
a batch or between two. Every mail it did not take fails at once with `mail_smtp` and the
reason (a configuration problem: never retried for days as a temporary failure), `doctor`
fails and says why, and the Email Queue Manager stays active."""
import email
import email.policy
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading

import pytest
from aiosmtpd.controller import Controller

from postroom.core.models import CronAction
from postroom.plugins.mail_queue.models import OutgoingMail
from postroom.plugins.mail_queue.settings import ACTION_CODE
from tests.scale.harness import BASE_CONFIG, Deployment, enqueue, wait_until
from tests.support.smtp import free_port

pytestmark = pytest.mark.heavy  # real serve processes, seconds of real retry backoff

POSTROOM = shutil.which("postroom", path=os.path.dirname(sys.executable)) or "postroom"
BATCH = 3
TOTAL = 7


def make_certificate(folder, name):
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class SwitchingRelay:
    """STARTTLS relay that accepts `good_for` messages on its first connection, then loads
    `bad` (a certificate the deployment does not trust) and ends that connection at the
    client's next command, as a relay whose certificate is replaced and reloaded would."""

    def __init__(self, good, bad, good_for):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*map(str, good))
        self.bad, self.good_for = bad, good_for
        self.received, self.lock, self.switched = [], threading.Lock(), False
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port(), tls_context=self.context,
                                     require_starttls=True, server_hostname="localhost")

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            if len(self.received) == self.good_for and not self.switched:
                self.context.load_cert_chain(*map(str, self.bad))  # new handshakes get it
                self.switched = True
                session.ending = True
        return "250 2.0.0 Ok: queued"

    def _end_if_switched(self, server, session):
        if getattr(session, "ending", False):
            server.transport.close()
            return "421 4.3.2 Reloading, closing connection"
        return None

    async def handle_NOOP(self, server, session, envelope, arg):
        return self._end_if_switched(server, session) or "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        ended = self._end_if_switched(server, session)
        if ended:
            return ended
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


@pytest.fixture
def certificates(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    return make_certificate(folder, "trusted"), make_certificate(folder, "replacement")


@pytest.fixture
def relay_deployment(make_host, tmp_path, db_url, certificates):
    """relay_deployment(good_for) → (Deployment on db_url sending through the relay, relay)."""
    made = []

    def factory(good_for):
        trusted, replacement = certificates
        relay = SwitchingRelay(trusted, replacement, good_for)
        relay.controller.start()
        dep = Deployment(make_host, tmp_path, db_url, ["mail_queue"], {
            "smtp_host": "127.0.0.1", "smtp_port": relay.controller.port, "smtp_encryption": "starttls",
            "smtp_ca_file": str(trusted[0]), "mail_batch_size": BATCH,
            # The mail whose connection ended before its data is retried after 1.2-3 s.
            "mail_retry_min_minutes": "0.02", "mail_retry_max_minutes": "0.05"})
        made.append((dep, relay))
        return dep, relay
    yield factory
    for dep, relay in made:
        dep.stop()
        relay.controller.stop()


def mail_rows(dep):
    dep.fresh()
    return list(OutgoingMail.select().order_by(OutgoingMail.id))


@pytest.mark.parametrize("good_for, where", [(2, "mid-batch"), (BATCH, "between batches")])
def test_a_relay_certificate_that_stops_verifying_under_serve_fails_the_rest_at_once(
        relay_deployment, good_for, where):
    dep, relay = relay_deployment(good_for)
    wanted = enqueue(dep.host, TOTAL)
    serve = dep.serve()

    def settled():  # sent mails are auto-deleted: what is left is what failed
        rows = mail_rows(dep)
        return len(relay.received) == good_for and all(r.state == "exception" for r in rows)
    wait_until(settled, 120, 0.3, what=f"every mail sent or failed ({where})")
    assert serve.proc.poll() is None, dep.log()  # serve kept running

    first = {f"r{i}@example.org" for i in range(good_for)}  # enqueued first, sent first (id order)
    got = [m["To"] for m in relay.received]
    assert sorted(got) == sorted(first)
    failed = mail_rows(dep)
    assert {r.email_to for r in failed} == set(wanted) - first
    assert len(failed) == TOTAL - good_for
    for row in failed:
        assert row.failure_type == "mail_smtp", row.failure_reason
        assert "certificate failed verification" in row.failure_reason
        assert "not retried" in row.failure_reason and row.next_attempt_at is None
    # Only a mail whose connection ended under it (mid-batch) had a second attempt: the
    # first ended before its data, the second met the new certificate.
    attempts = sorted(r.attempts for r in failed)
    assert attempts == ([1] * (len(failed) - 1) + [2] if where == "mid-batch" else [1] * len(failed))
    assert "certificate failed verification" in dep.log()

    doctor = subprocess.run([POSTROOM, "--config", dep.config_path, "doctor"], capture_output=True, text=True,
                            timeout=120)
    assert doctor.returncode != 0
    assert "TLS certificate of server default failed verification" in doctor.stdout
    assert "mail fails because of a server's TLS certificate" in doctor.stdout
    listing = json.loads(subprocess.run([POSTROOM, "--config", dep.config_path, "queue", "list", "--state",
                                         "exception", "--json"], capture_output=True, text=True,
                                        timeout=120).stdout)
    assert {m["email_to"] for m in listing} == set(wanted) - first

    dep.fresh()
    action = CronAction.get(CronAction.code == ACTION_CODE)
    assert action.active and action.failure_count == 0
    assert dep.restarts() == 0
