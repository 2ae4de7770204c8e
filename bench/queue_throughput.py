"""Queue throughput: enqueue N bulk mails, then drain them with the queue action into an SMTP
sink on loopback; compare with a bare smtplib client sending pre-built messages (the ceiling).

Prints one JSON line: enqueue_seconds, enqueue_per_second, drain_seconds, mails_per_second
(the drain rate), ceiling_mails_per_second, and the run's parameters. The baseline to beat is
django-post-office's send_queued_mail, about 600 mails/s into the same kind of sink.

    python bench/queue_throughput.py [-n 20000] [--db URL] [--workers K] [--smtp HOST:PORT]
                                     [--profile FILE] [--dkim rsa-2048|ed25519]

`--dkim` gives example.com (the senders' domain) a key of that algorithm first, so every
mail is DKIM-signed: the figure then includes the cost of signing.

The sink (unless --smtp names one) runs in its own process, so that it does not share the
drain's interpreter; it accepts every message and only counts them. It offers PIPELINING
(RFC 2920) like Postfix does, which the drain uses (two round trips per mail instead of
four); `--no-pipelining` measures the drain the way smtplib.sendmail talks. The ceiling
is bare smtplib.sendmail over one connection, which never pipelines.
"""
import argparse
import json
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from postroom.core.config import Config  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from smtp_sink import SinkProtocol  # noqa: E402  (this script's folder is on sys.path)

BODY = "<p>Hello,</p><p>" + "This month's news from the shop. " * 20 + "</p><p>See you soon.</p>"


def serve_sink(port, pipelining=True):
    """The sink process: accepts every message and counts it. Like Postfix it offers
    PIPELINING unless told not to."""
    import asyncio
    import threading
    counter = [0]

    async def run():
        server = await asyncio.get_running_loop().create_server(
            lambda: SinkProtocol(lambda: counter.__setitem__(0, counter[0] + 1), pipelining), "127.0.0.1", port)
        print("ready", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)),
                         daemon=True).start()
        await done.wait()
        server.close()
    asyncio.run(run())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(pipelining):
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-sink", str(port)]
                            + ([] if pipelining else ["--no-pipelining"]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, "127.0.0.1", port


def write_config(tmp, db_url, smtp_host, smtp_port):
    path = os.path.join(tmp, "postroom.cfg")
    with open(path, "w") as fh:
        fh.write("[postroom]\n"
                 f"database = {db_url or 'sqlite:///' + os.path.join(tmp, 'postroom.db')}\n"
                 f"log_dir = {os.path.join(tmp, 'logs')}\n"
                 "domains = example.com\n"
                 f"smtp_host = {smtp_host}\nsmtp_port = {smtp_port}\n"
                 "daily_limit = 100000000\n"
                 "cron_time_budget = 3600\n")
    return path


def ceiling(smtp_host, port, n):
    """A bare smtplib client over one connection, messages built beforehand."""
    from email.message import EmailMessage
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "news@example.com", "News"
    msg.set_content(BODY, subtype="html")
    payloads = []
    for i in range(n):
        del msg["To"], msg["Message-Id"]
        msg["To"], msg["Message-Id"] = f"c{i}@example.org", f"<c{i}@example.com>"
        payloads.append((f"c{i}@example.org", msg.as_bytes()))
    conn = smtplib.SMTP(smtp_host, port)
    t0 = time.perf_counter()
    for rcpt, data in payloads:
        conn.sendmail("bounce@example.com", [rcpt], data)
    elapsed = time.perf_counter() - t0
    conn.quit()
    return n / elapsed


def drain_worker(config_path):
    from postroom.plugins.mail_queue import sending
    host = Host.from_config(config_path)
    sending.process_queue(host)
    host.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--smtp", help="HOST:PORT of an external sink")
    parser.add_argument("--profile", help="write a cProfile of the drain (workers=1) to FILE")
    parser.add_argument("--no-pipelining", action="store_true",
                        help="our sink does not offer PIPELINING (4 round trips per mail, as smtplib)")
    parser.add_argument("--dkim", choices=["rsa-2048", "ed25519"],
                        help="sign every mail with a key of this algorithm")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--drain-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        return serve_sink(args.serve_sink, not args.no_pipelining)
    if args.drain_worker:
        return drain_worker(args.drain_worker)

    sink = None
    if args.smtp:
        smtp_host, _, smtp_port = args.smtp.rpartition(":")
        smtp_port = int(smtp_port)
    else:
        sink, smtp_host, smtp_port = start_sink(not args.no_pipelining)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config_path = write_config(tmp, args.db, smtp_host, smtp_port)
            host = Host(Config.load(config_path)).open()
            host.enable_plugin("mail_queue")
            if args.dkim:
                from postroom.plugins.mail_queue import dkim_keys
                dkim_keys.generate(host, "example.com", "bench", args.dkim)
            service = host.service("mail")
            mails = [{"email_to": f"Reader {i} <r{i}@example.org>", "subject": "This month's news",
                      "body_html": BODY, "ref": f"mt{i}",
                      "headers": {"List-Unsubscribe": f"<https://example.com/u/{i}>"}}
                     for i in range(args.n)]
            t0 = time.perf_counter()
            service.enqueue(mails)
            enqueue_seconds = time.perf_counter() - t0

            t0 = time.perf_counter()
            if args.workers > 1:
                procs = [subprocess.Popen([sys.executable, __file__, "--drain-worker", config_path])
                         for _ in range(args.workers)]
                for p in procs:
                    p.wait()
            elif args.profile:
                import cProfile
                cProfile.runctx("service.process_queue()", globals(), {"service": service}, args.profile)
            else:
                service.process_queue()
            drain_seconds = time.perf_counter() - t0
            from postroom.plugins.mail_queue.models import OutgoingMail
            left = OutgoingMail.select().count()
            engine = host.db.engine
            ceiling_rate = ceiling(smtp_host, smtp_port, min(args.n, 20_000))
            host.close()
    finally:
        if sink is not None:
            sink.stdin.close()
            sink.wait(10)
    print(json.dumps({
        "n": args.n, "workers": args.workers, "db": engine, "dkim": args.dkim,
        "pipelining": None if args.smtp else not args.no_pipelining,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_per_second": round(args.n / enqueue_seconds),
        "drain_seconds": round(drain_seconds, 3),
        "mails_per_second": round(args.n / drain_seconds),
        "ceiling_mails_per_second": round(ceiling_rate),
        "baseline_mails_per_second": 600,
        "left_in_queue": left,
    }))


if __name__ == "__main__":
    main()
