"""Console page speed: every screen's server time with 100,000 mails in the queue and 10,000
messages on one record, through the real HTTP service on loopback, logged in as an operator.

Prints one JSON line: for each page its median and worst time over the repeats (ms), the
slowest page, whether every page (the doctor's included) stayed under the 200 ms target in
its median and in its worst request, the load average, and the parameters. "Run checks now"
on the doctor page (its DNS probes wait on the network, not on the database) is an action,
not a page: its time is reported beside the pages. On PostgreSQL the tables are analyzed
after the fill, as autovacuum would within a minute of loading them.

    python bench/console.py [--mails 100000] [--messages 10000] [--repeat 5] [--db URL]
"""
import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from postroom.core import records  # noqa: E402
from postroom.core.config import Config  # noqa: E402
from postroom.core.console import operators  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from postroom.core.models import Message, Notification  # noqa: E402
from tests.support.http import ConsoleClient, running  # noqa: E402

TARGET_MS = 200
PASSWORD = "bench password 1"


def fill(host, n_mails: int, n_messages: int):
    """The queue and one busy record, written with multi-row INSERTs in chunks; the chart's
    hourly counts as sending would have left them for the sent and failed mails."""
    import collections
    from postroom.plugins.mail_queue.hourly import hour_of
    from postroom.plugins.mail_queue.models import HourlyCount, OutgoingMail
    hourly = collections.Counter()
    now = host.clock.now()
    rec = records.create_record(host, "generic", "Busy record")
    partner = records.create_partner(host, "Ann", "ann@example.com")
    states = ["sent"] * 7 + ["outgoing"] * 2 + ["exception"]
    chunk = 2000
    for start in range(0, n_messages, chunk):
        with host.transaction():
            rows = [{"record": rec.id, "model": "generic", "email_from": "ann@example.com",
                     "subject": f"Message {i}", "body": f"<p>Entry {i} of the busy record.</p>",
                     "message_type": "comment", "is_internal": False,
                     "message_id": f"<bench-{i}@example.com>", "created_at": now - dt.timedelta(seconds=n_messages - i)}
                    for i in range(start, min(n_messages, start + chunk))]
            Message.insert_many(rows).execute()
    ids = [m.id for m in Message.select(Message.id).where(Message.record == rec)]
    for start in range(0, len(ids), chunk):
        with host.transaction():
            Notification.insert_many([{"message": mid, "partner": partner.id, "notification_type": "email",
                                       "status": "exception" if mid % 10 == 0 else "sent",
                                       "failure_type": "mail_smtp" if mid % 10 == 0 else None,
                                       "updated_at": now}
                                      for mid in ids[start:start + chunk]]).execute()
    for start in range(0, n_mails, chunk):
        with host.transaction():
            rows = []
            for i in range(start, min(n_mails, start + chunk)):
                state = states[i % len(states)]
                at = now - dt.timedelta(minutes=(i * 7) % (48 * 60))
                if state != "outgoing":
                    hourly[(hour_of(at), "sent" if state == "sent" else "failed")] += 1
                rows.append({"email_from": "shop@example.com", "email_to": f"user{i}@example.org",
                             "subject": f"News {i}", "body_html": "<p>News</p>", "message_id": f"<q{i}@example.com>",
                             "state": state, "created_at": at, "updated_at": at,
                             "sent_at": at if state == "sent" else None, "attempts": 1 if state != "outgoing" else 0,
                             "failure_type": "mail_smtp" if state == "exception" else None,
                             "failure_reason": "550 5.1.1 User unknown" if state == "exception" else None})
            OutgoingMail.insert_many(rows).execute()
    with host.transaction():
        HourlyCount.insert_many([{"hour": h, "outcome": o, "count": n} for (h, o), n in hourly.items()]).execute()
    return rec, ids


def timed(client, path, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise SystemExit(f"GET {path} answered {resp.status}: {resp.text[:200]}")
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        values = {"database": args.db or f"sqlite:///{tmp}/bench.db", "log_dir": f"{tmp}/logs",
                  "domains": "example.com", "dns_resolver": "127.0.0.1:9", "dns_timeout": "0.2"}
        host = Host(Config(values, base_dir=tmp)).open()
        for name in ("mail_queue", "mail_marketing", "inbound"):
            host.enable_plugin(name)
        records.ensure_admin(host, "admin@example.com")
        t0 = time.perf_counter()
        rec, message_ids = fill(host, args.mails, args.messages)
        fill_seconds = time.perf_counter() - t0
        if host.db.engine == "postgresql":
            # Autovacuum analyzes a table within a minute of such a load; measured at once,
            # the planner would still believe the tables empty (and sort 70,000 sent mails to
            # show 50). SQLite keeps no statistics unless asked, and Postroom never asks.
            host.db.execute_sql("ANALYZE")
        operators.add(host, "ops@example.com", PASSWORD)
        from postroom.plugins.mail_queue.models import OutgoingMail
        failed = OutgoingMail.select(OutgoingMail.id).where(OutgoingMail.state == "exception").first().id
        pages = ["/", "/records/", "/records/?q=Busy", f"/records/generic/{rec.id}",
                 f"/records/generic/{rec.id}?page=200", f"/records/message/{message_ids[-1]}",
                 "/queue/", "/queue/?state=exception", "/queue/?recipient=user99", "/queue/?state=sent&page=500",
                 "/queue/?older=24h", f"/queue/{failed}", f"/queue/message/{message_ids[-10]}", "/limit/",
                 "/cron/", "/campaigns/", "/inbound/", "/inbound/?verdict=refused"]
        with running(host) as url:
            client = ConsoleClient(url)
            if client.login("ops@example.com", PASSWORD).status != 303:
                raise SystemExit("login failed")
            client.get("/")  # warm up templates and the worker threads
            client.get("/doctor/")
            t0 = time.perf_counter()
            run_now = client.post("/doctor/run")  # the page then shows this run's results
            run_now_ms = round((time.perf_counter() - t0) * 1000, 1) if run_now.status == 303 else None
            results = {path: timed(client, path, args.repeat) for path in pages + ["/doctor/"]}
        host.close()
    slowest = max(results, key=lambda p: results[p]["max_ms"])
    print(json.dumps({"bench": "console", "mails": args.mails, "messages_on_one_record": args.messages,
                      "engine": "postgresql" if (args.db or "").startswith("postgres") else "sqlite",
                      "fill_seconds": round(fill_seconds, 1), "repeat": args.repeat, "target_ms": TARGET_MS,
                      "load_avg_1m": round(os.getloadavg()[0], 2),
                      "all_under_target": all(r["max_ms"] < TARGET_MS for r in results.values()),
                      "over_target": sorted(p for p, r in results.items() if r["max_ms"] >= TARGET_MS),
                      "slowest_page": slowest, "slowest_max_ms": results[slowest]["max_ms"],
                      "pages": results, "doctor_run_now_ms": run_now_ms}))


if __name__ == "__main__":
    main()
