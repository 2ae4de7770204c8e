"""Scale-out: drain throughput on PostgreSQL with 1, 2 and 4 worker processes.

For each worker count K: queue N bulk mails, start `postroom serve --role scheduler
--workers K` (real processes), let them settle, trigger `Mail: Email Queue Manager`, and
time until every mail has left and the sink on loopback has counted N messages. The run
creates its own database on the PostgreSQL server and drops it at the end.

Prints one JSON line: mails_per_second and seconds per worker count, the number of mails,
what the sink received (received - N per count = mails sent twice: must be 0), and the
machine's core count (the workers, PostgreSQL and the sink share those cores).

    python bench/scale.py [-n 20000] [--counts 1,2,4] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from urllib.parse import urlparse, urlunparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg  # noqa: E402

from postroom.core.config import Config  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from smtp_sink import SinkProtocol  # noqa: E402  (this script's folder is on sys.path)

BODY = "<p>Hello,</p><p>" + "This month's news from the shop. " * 20 + "</p><p>See you soon.</p>"


def _count(counter):
    with counter.get_lock():
        counter.value += 1


def _serve_sink(port, counter, ready):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SinkProtocol(lambda: _count(counter), pipelining=False), "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()
    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(url):
    p = urlparse(url)
    return psycopg.connect(host=p.hostname or "127.0.0.1", port=p.port or 5432,
                           user=p.username or "postgres", dbname="postgres", autocommit=True)


def outgoing(host) -> int:
    from postroom.plugins.mail_queue.models import OutgoingMail
    host.db.close()
    return OutgoingMail.select().where(OutgoingMail.state == "outgoing").count()


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"bench/scale.py: timed out waiting for {what}")


def run_count(host, cfg_path, workdir, k, n, counter, log_path):
    """Drain n mails with k workers; returns (seconds, received)."""
    mail = host.service("mail")
    env = dict(os.environ, PYTHONPATH=ROOT, POSTROOM_CONFIG=cfg_path)
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve", "--role", "scheduler", "--workers", str(k)],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        base = open(log_path).read().count("serve started") if os.path.exists(log_path) else 0
        wait(lambda: open(log_path).read().count("serve started") >= base + k, 120, f"{k} workers")
        time.sleep(2)  # their first (empty) runs are over: the queue action is not due now
        for start in range(0, n, 5000):
            mail.enqueue([{"email_to": f"r{i}@example.org", "subject": f"News {i}", "body_html": BODY}
                          for i in range(start, min(n, start + 5000))])
        with counter.get_lock():
            counter.value = 0
        t0 = time.monotonic()
        mail.trigger_queue()
        wait(lambda: counter.value >= n and outgoing(host) == 0, 3600, "the drain")
        seconds = time.monotonic() - t0
        time.sleep(0.5)
        return seconds, counter.value
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="mails per worker count")
    parser.add_argument("--counts", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--pg", default=os.environ.get("POSTROOM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server URL (a database is created and dropped there)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    try:
        admin(args.pg).close()
    except psycopg.Error as exc:
        # The benchmark is about PostgreSQL; without one there is nothing to measure.
        print(json.dumps({"bench": "scale", "skipped": f"PostgreSQL not reachable at {args.pg}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"}))
        return

    counter = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    port = free_port()
    sink = multiprocessing.Process(target=_serve_sink, args=(port, counter, ready), daemon=True)
    sink.start()
    ready.wait(10)

    name = f"postroom_bench_{uuid.uuid4().hex[:10]}"
    with admin(args.pg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunparse(urlparse(args.pg)._replace(path="/" + name))
    workdir = tempfile.mkdtemp(prefix="postroom-bench-scale-")
    cfg_path = os.path.join(workdir, "postroom.cfg")
    with open(cfg_path, "w") as fh:
        fh.write("[postroom]\n" + "".join(f"{k} = {v}\n" for k, v in {
            "database": url, "log_dir": os.path.join(workdir, "logs"), "domains": "example.com",
            "smtp_host": "127.0.0.1", "smtp_port": port, "daily_limit": 10 ** 9,
            "mail_from": "Shop <shop@example.com>", "serve_poll_seconds": 0.2}.items()))
    host = Host(Config.load(cfg_path)).open()
    results, seconds, received = {}, {}, {}
    try:
        host.enable_plugin("mail_queue")
        log_path = os.path.join(workdir, "logs", "postroom.log")
        for k in counts:
            secs, got = run_count(host, cfg_path, workdir, k, args.n, counter, log_path)
            seconds[str(k)] = round(secs, 2)
            results[str(k)] = round(args.n / secs, 1)
            received[str(k)] = got
    finally:
        host.close()
        with admin(args.pg) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        sink.terminate()
    print(json.dumps({"bench": "scale", "mails": args.n, "mails_per_second": results, "seconds": seconds,
                      "received": received, "cores": os.cpu_count(),
                      "batch_size": 200, "database": "postgresql"}))


if __name__ == "__main__":
    main()
