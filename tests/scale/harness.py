"""Real worker processes on a real PostgreSQL database, for the scale-out tests.

`Deployment` is one test's deployment: a config file under tmp_path pointing at the test's
fresh PostgreSQL database (the `pg_database` fixture), a host in the test process (on the
system clock, like the workers) to enqueue mail and to look at the tables, and
`postroom serve` subprocesses started with `serve()`. Everything started is stopped at the
end: SIGTERM first, then SIGKILL of the whole process group.
"""
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time

import psycopg

from postroom.core.clock import SystemClock
from tests.support.waiting import wait_until  # noqa: F401 - the scale tests import it from here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Values every scale test shares: fast polling, small batches (the in-flight window of one
# worker), short leases (so a dead worker's mails are taken over within seconds) and no
# daily limit in the way unless a test sets one.
BASE_CONFIG = {
    "serve_poll_seconds": "0.2",
    "cron_time_budget": "60",
    "smtp_timeout": "5",
    "mail_batch_size": "50",
    "mail_lease_seconds": "15",
    "daily_limit": "1000000",
    # A mail in flight in a killed worker may have been delivered: it is retried once,
    # after the shortest backoff, which the tests keep short.
    "mail_retry_min_minutes": "0.05",
    "mail_from": "Shop <shop@example.com>",
    "inbound_loop_max": "1000000",
    "inbound_loop_max_peer": "1000000",  # every test client connects from 127.0.0.1
}


class Serve:
    """One `postroom serve` process (maybe a supervisor of K workers)."""

    def __init__(self, deployment, args):
        self.deployment = deployment
        env = dict(os.environ, PYTHONPATH=ROOT, POSTROOM_CONFIG=deployment.config_path)
        self.out = open(deployment.tmp_path / f"serve-{len(deployment.procs)}.out", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve", *args], cwd=deployment.tmp_path,
                                     env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (children of a supervisor), by its group id
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.out.close()


class Deployment:
    def __init__(self, make_host, tmp_path, db_url, plugins, config):
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.procs: list[Serve] = []
        values = dict(BASE_CONFIG, **{k: str(v) for k, v in config.items()})
        self.host = make_host(plugins=plugins, db_url=db_url, config=values, clock_=SystemClock())
        self.config_path = str(self.host.config.path)
        self.log_path = tmp_path / "logs" / "postroom.log"

    # --- processes --------------------------------------------------------------------

    def serve(self, *args) -> Serve:
        proc = Serve(self, args)
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def workers(self) -> dict[int, int]:
        """{worker index: current pid} from the supervisor's log lines."""
        current = {}
        for index, pid in re.findall(r"worker (\d+) started \(pid (\d+)", self.log()):
            current[int(index)] = int(pid)
        return current

    def wait_for_workers(self, count, timeout=60):
        wait_until(lambda: len(self.workers()) >= count
                   and self.log().count("serve started") >= count + self.restarts(),
                   timeout, what=f"{count} workers to start")

    def restarts(self) -> int:
        return self.log().count("restarting it")

    def stop(self):
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    # --- the database ---------------------------------------------------------------------

    def admin(self):
        """An autocommit psycopg connection to the server's `postgres` database."""
        from urllib.parse import urlparse
        p = urlparse(self.db_url)
        return psycopg.connect(host=p.hostname, port=p.port or 5432, user=p.username or "postgres",
                               dbname="postgres", autocommit=True)

    @property
    def db_name(self) -> str:
        return self.db_url.rsplit("/", 1)[1]

    def terminate_backends(self) -> int:
        """pg_terminate_backend every connection to the test database; how many."""
        with self.admin() as conn:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = %s AND pid <> pg_backend_pid()", (self.db_name,)).fetchall()
        self.host.db.close()  # ours was among them
        return len(rows)

    def database_away(self, away: bool) -> None:
        """Refuse (or allow again) new connections to the test database; refusing also ends
        the open ones, so for the workers the database is gone until it comes back."""
        with self.admin() as conn:
            conn.execute(f'ALTER DATABASE "{self.db_name}" ALLOW_CONNECTIONS {"false" if away else "true"}')
        if away:
            self.terminate_backends()

    def fresh(self):
        """Drop our connection, so the next query sees the others' commits on a new one."""
        if not self.host.db.is_closed():
            self.host.db.close()


def enqueue(host, count, prefix="r", domain="example.org") -> dict[str, str]:
    """Queue `count` bulk mails, one recipient each; returns {recipient: Message-Id}."""
    from postroom.plugins.mail_queue.models import OutgoingMail
    mails = [{"email_to": f"{prefix}{i}@{domain}", "subject": f"News {i}",
              "body_html": f"<p>Hello number {i}</p>", "bulk": True} for i in range(count)]
    ids = host.service("mail").enqueue(mails)
    rows = OutgoingMail.select(OutgoingMail.email_to, OutgoingMail.message_id).where(OutgoingMail.id.in_(ids))
    return {r.email_to: r.message_id for r in rows}


def outgoing_left(dep) -> int:
    from postroom.plugins.mail_queue.models import OutgoingMail
    dep.fresh()
    return OutgoingMail.select().where(OutgoingMail.state == "outgoing").count()


def receipts(sink) -> dict[str, list[str]]:
    """{recipient: [Message-Id of every copy received]}."""
    got = collections.defaultdict(list)
    for r in sink.received():
        for rcpt in r.rcpt_tos:
            got[rcpt].append(r.message_id)
    return got


def hostname() -> str:
    return socket.gethostname()
