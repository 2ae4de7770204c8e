"""Campaign benchmark: import a generated list of 100,000 contacts, send one campaign to it
through the marketing process queue and the mail queue into an SMTP sink on loopback.

Prints one JSON line: import seconds, processing seconds (process queue + mail queue until
every mail reached the sink), mails per second, and the peak memory of the process. The
peak must stay flat as the list grows: the import streams the file and everything after it
works in bounded batches (try --contacts 10000 and compare).

    python bench/campaign.py [--contacts N] [--db URL]
"""
import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aiosmtpd.controller import Controller  # noqa: E402

from postroom.core import scheduler  # noqa: E402
from postroom.core.config import Config  # noqa: E402
from postroom.core.host import Host  # noqa: E402


class CountingSink:
    """An SMTP server on 127.0.0.1 that only counts what it accepts (keeping 100,000
    messages would measure the sink, not Postroom)."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
        return "250 2.0.0 OK"


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_csv(path, n):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("email,name\n")
        for i in range(n):
            fh.write(f"contact{i}@example.org,Contact {i}\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp folder)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="postroom-bench-campaign-")
    handler = CountingSink()
    with socket.socket() as probe:   # a free loopback port for the sink
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = Config({"database": args.db or f"sqlite:///{work}/postroom.db", "log_dir": f"{work}/logs",
                         "log_level": "WARNING", "domains": "example.com", "smtp_host": "127.0.0.1",
                         "smtp_port": str(port), "daily_limit": str(10 * args.contacts),
                         "cron_time_budget": "60", "marketing_batch_size": "1000",
                         "marketing_run_limit": "20000", "mail_batch_size": "1000"})
        host = Host(config).open()
        host.enable_plugin("mail_marketing")
        from postroom.plugins.mail_marketing import campaigns, lists
        csv_path = os.path.join(work, "contacts.csv")
        write_csv(csv_path, args.contacts)
        lists.create_list(host, "bench")
        t0 = time.monotonic()
        with open(csv_path, "rb") as fh:
            imported = lists.import_contacts(host, "bench", fh)["imported"]
        import_seconds = time.monotonic() - t0
        peak_after_import = peak_mb()
        campaign = campaigns.create_campaign(host, "Benchmark news", "<h1>News</h1><p>Hello from the bench.</p>",
                                             ["bench"])
        t0 = time.monotonic()
        campaigns.send(host, campaign.id)
        runs, by_action = 0, {}
        while True:
            results = scheduler.run_due(host, limit=1000)
            runs += len(results)
            for r in results:
                by_action[r["name"]] = by_action.get(r["name"], 0.0) + r["duration"]
            if not results and handler.count >= imported:
                break
            if not results:
                time.sleep(0.05)
            if time.monotonic() - t0 > 1800:
                raise SystemExit("benchmark did not finish in 30 minutes")
        processing_seconds = time.monotonic() - t0
        stats = campaigns.stats(campaigns.get_campaign(host, campaign.id))
        print(json.dumps({
            "bench": "campaign", "contacts": args.contacts, "imported": imported,
            "engine": host.db.engine,
            "import_seconds": round(import_seconds, 2),
            "processing_seconds": round(processing_seconds, 2),
            "mails_received": handler.count, "traces_sent": stats["sent"],
            "mails_per_second": round(handler.count / processing_seconds, 1) if processing_seconds else None,
            "action_runs": runs,
            "seconds_by_action": {k: round(v, 2) for k, v in sorted(by_action.items())},
            "peak_memory_mb_after_import": peak_after_import,
            "peak_memory_mb": peak_mb(),
        }))
        host.close()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
