"""Campaign benchmark: a campaign end to end against the plain queue drain, same sink.

The campaign phase imports a generated list of N contacts, sends one campaign to it and
runs the scheduled actions (Mail Marketing: Process queue, then Mail: Email Queue Manager)
until every recipient's mail has been handed to the sink. The drain phase enqueues the same
number of plain bulk mails (same body) through the `mail` service and drains them. Both
talk to one SMTP sink in another process: Postfix's `smtp-sink` (C) when it is installed,
else bench/smtp_sink.py in its own interpreter, so the sink never competes with Postroom for
the interpreter lock. Each phase runs in a fresh child process on a fresh database, so its
peak memory is its own; the campaign's peak must stay flat as the list grows (the import
streams, processing works in bounded batches: compare --contacts 10000 and 100000).

A third phase sends the same campaign with a personalised subject and body (the contact's
name and address, the subject they got, their unsubscribe link and a plugin's value:
rendered per recipient in the template sandbox).

Prints one JSON line: campaign mails/s (end to end: the import, Process queue and the mail
queue), drain mails/s, their ratio (target >= 0.8; `ratio_after_import` counts the campaign
from `send` on), the personalised campaign's mails/s and what personalisation costs
against the plain campaign from `send` on (target < 0.2), the same two comparisons in CPU time per mail (cpu_ratio,
personalisation_cpu_cost: steadier when other work shares the machine), import seconds and
peak memory of each phase.

With --repeat R the three phases run in R rounds, the order turned round every other
round (drain, campaign, personal; then personal, campaign, drain; …) so a load that
grows or fades during the run weighs on every phase alike. Each comparison is made inside
each round (the phases of one round ran under the same load) and the median of the
rounds is reported, with its spread (`*_spread`: lowest and highest round) and every
round's figure (`*_rounds`); rates are the median of each phase's rounds.

With --profile DIR each phase runs under cProfile and leaves DIR/<phase>-<round>.prof
(read with `python -m pstats`); its figures then are the profiled run's, not to compare.

    python bench/campaign.py [--contacts N] [--repeat R] [--db URL] [--smtp HOST:PORT] [--profile DIR]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from postroom.core.plugins import hookimpl  # noqa: E402
from smtp_sink import external_sink  # noqa: E402

BODY = "<h1>News</h1><p>Hello from the bench.</p><p>" + "This month's news from the shop. " * 20 + "</p>"
# The same campaign personalised per recipient (sandboxed Jinja2, rendered per recipient),
# reading every kind of name a campaign offers: the contact's, the subject they got, their
# unsubscribe link and a plugin's value (BenchShop's).
PERSONAL_BODY = ("<h1>{{ campaign.subject }}</h1><p>Hello {{ contact.name }} ({{ contact.email }}), "
                 "from {{ shop.name }}.</p><p>" + "This month's news from the shop. " * 20
                 + '</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')


class BenchShop:
    """A plugin that adds a value to campaign templates."""

    @hookimpl(optionalhook=True)
    def postroom_campaign_template_context(self, host, campaign):
        return {"shop": {"name": "the shop"}}


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    """This process's CPU time (user + system): what a phase costs Postroom, which on a
    loaded machine says more than the wall clock (the sink runs in another process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_host(work, db_url, smtp, n, extra=()):
    from postroom.core.config import Config
    from postroom.core.host import Host
    smtp_host, _, smtp_port = smtp.rpartition(":")
    config = Config({"database": db_url or f"sqlite:///{work}/postroom.db", "log_dir": f"{work}/logs",
                     "log_level": "WARNING", "domains": "example.com", "smtp_host": smtp_host,
                     "smtp_port": smtp_port, "daily_limit": str(10 * n),
                     "cron_time_budget": "3600", "marketing_batch_size": "1000",
                     "marketing_run_limit": "20000", "mail_batch_size": "1000"})
    return Host(config, extra=extra).open()


def phase_drain(work, db_url, smtp, n):
    """Enqueue n plain bulk mails, then time draining them."""
    host = open_host(work, db_url, smtp, n)
    host.enable_plugin("mail_queue")
    service = host.service("mail")
    service.enqueue([{"email_to": f"contact{i}@example.org", "subject": "Benchmark news",
                      "body_html": BODY, "ref": f"bench{i}"} for i in range(n)])
    t0, c0 = time.perf_counter(), cpu_seconds()
    service.process_queue()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    from postroom.plugins.mail_queue.models import OutgoingMail
    left = OutgoingMail.select().where(OutgoingMail.state != "sent").count()
    host.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "mails": n - left, "peak_memory_mb": peak_mb()}


def write_csv(path, n):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("email,name\n")
        for i in range(n):
            fh.write(f"contact{i}@example.org,Contact {i}\n")


def phase_campaign(work, db_url, smtp, n, body=BODY, subject="Benchmark news"):
    """Import n contacts, then time the campaign from `send` until every trace is sent."""
    from postroom.core import scheduler
    # Both campaigns with the plugin, so both ask it for its values once per batch.
    host = open_host(work, db_url, smtp, n, extra=[BenchShop()])
    host.enable_plugin("mail_marketing")
    from postroom.plugins.mail_marketing import campaigns, lists
    csv_path = os.path.join(work, "contacts.csv")
    write_csv(csv_path, n)
    lists.create_list(host, "bench")
    start, c_start = time.perf_counter(), cpu_seconds()
    with open(csv_path, "rb") as fh:
        imported = lists.import_contacts(host, "bench", fh)["imported"]
    import_seconds, import_cpu = time.perf_counter() - start, cpu_seconds() - c_start
    peak_after_import = peak_mb()
    campaign = campaigns.create_campaign(host, subject, body, ["bench"])
    t0, c0 = time.perf_counter(), cpu_seconds()
    campaigns.send(host, campaign.id)
    by_action = {}
    while True:
        results = scheduler.run_due(host, limit=1000)
        for r in results:
            by_action[r["name"]] = by_action.get(r["name"], 0.0) + r["duration"]
        stats = campaigns.stats(campaigns.get_campaign(host, campaign.id))
        if stats["sent"] >= imported:
            break
        if not results:
            time.sleep(0.01)  # a trigger is due in the next instant; nothing to do until then
        if time.perf_counter() - t0 > 1800:
            raise SystemExit("campaign did not finish in 30 minutes")
    end = time.perf_counter()
    seconds, cpu = end - t0, cpu_seconds() - c0
    host.close()
    # End to end (the import, the campaign's creation, Process queue, the mail queue) and
    # from `send` on, as earlier versions of this bench counted it.
    return {"seconds": end - start, "cpu_seconds": cpu_seconds() - c_start, "mails": stats["sent"],
            "seconds_after_import": seconds, "cpu_seconds_after_import": cpu, "import_seconds": import_seconds,
            "import_cpu_seconds": import_cpu,
            "seconds_by_action": {k: round(v, 2) for k, v in sorted(by_action.items())},
            "peak_memory_mb_after_import": peak_after_import, "peak_memory_mb": peak_mb()}


def run_phase(name, args, smtp, round_no=0):
    """Run one phase in a child process on its own database; returns its JSON result."""
    db_url = args.db
    if db_url and db_url.startswith("postgresql"):
        db_url = fresh_pg_database(db_url, name)
    profile = []
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        profile = ["-m", "cProfile", "-o", os.path.join(args.profile, f"{name}-{round_no}.prof")]
    try:
        out = subprocess.run([sys.executable, *profile, __file__, "--phase", name, "--contacts", str(args.contacts),
                              "--smtp", smtp] + (["--db", db_url] if db_url else []),
                             check=True, capture_output=True, text=True)
    finally:
        if db_url != args.db:
            drop_pg_database(db_url)  # the server is shared: leave no bench database behind
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(values, digits=3):
    """(median, [lowest, highest], every value) of one figure over the rounds."""
    return (round(statistics.median(values), digits), [round(min(values), digits), round(max(values), digits)],
            [round(v, digits) for v in values])


def _rounds(runs):
    """The comparisons made inside each round, then their medians over the rounds."""
    def rate(r):
        return r["mails"] / r["seconds"]

    def cpu(r):
        return r["cpu_seconds"] / r["mails"]

    def after_import(r):
        return r["mails"] / r.get("seconds_after_import", r["seconds"])  # the drain has no import

    def cpu_after_import(r):
        return r.get("cpu_seconds_after_import", r["cpu_seconds"]) / r["mails"]

    figures = {
        "ratio": [rate(c) / rate(d) for c, d in zip(runs["campaign"], runs["drain"])],
        "ratio_after_import": [after_import(c) / rate(d) for c, d in zip(runs["campaign"], runs["drain"])],
        # Personalisation is compared from `send` on: both campaigns import the same list.
        "personalisation_cost": [1 - after_import(p) / after_import(c) for p, c in zip(runs["personal"], runs["campaign"])],
        "cpu_ratio": [cpu(d) / cpu(c) for c, d in zip(runs["campaign"], runs["drain"])],
        "personalisation_cpu_cost": [1 - cpu_after_import(c) / cpu_after_import(p)
                                     for p, c in zip(runs["personal"], runs["campaign"])],
    }
    out = {}
    for name, values in figures.items():
        out[name], out[name + "_spread"], out[name + "_rounds"] = _spread(values)
    for name in ("campaign", "drain", "personal"):
        out[name + "_rate"] = statistics.median(rate(r) for r in runs[name])
        out[name + "_rates"] = [round(rate(r), 1) for r in runs[name]]
        out[name + "_cpu"] = statistics.median(cpu(r) for r in runs[name])
        out[name + "_seconds"] = statistics.median(r["seconds"] for r in runs[name])
    return out


def fresh_pg_database(url, name):
    import psycopg
    from urllib.parse import urlparse, urlunparse
    p = urlparse(url)
    db = f"postroom_bench_{name}_{os.getpid()}"
    with psycopg.connect(host=p.hostname, port=p.port or 5432, user=p.username or "postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    return urlunparse(p._replace(path="/" + db))


def drop_pg_database(url):
    import psycopg
    from urllib.parse import urlparse
    p = urlparse(url)
    with psycopg.connect(host=p.hostname, port=p.port or 5432, user=p.username or "postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{p.path.lstrip("/")}"')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp folder per phase)")
    parser.add_argument("--smtp", help="HOST:PORT of a sink already running")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of the three phases, interleaved; the median round is reported, with the spread")
    parser.add_argument("--profile", metavar="DIR", help="run each phase under cProfile, its stats in DIR")
    parser.add_argument("--phase", choices=("drain", "campaign", "personal"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        with tempfile.TemporaryDirectory(prefix="postroom-bench-campaign-") as work:
            if args.phase == "personal":
                result = phase_campaign(work, args.db, args.smtp, args.contacts, PERSONAL_BODY,
                                        "News for {{ contact.name }}")
            else:
                fn = phase_drain if args.phase == "drain" else phase_campaign
                result = fn(work, args.db, args.smtp, args.contacts)
            print(json.dumps(result))
        return
    with external_sink(args.smtp) as (smtp, kind):
        runs = {"drain": [], "campaign": [], "personal": []}
        rounds = max(1, args.repeat)
        for i in range(rounds):
            # Every other round the other way round: personal neither always first nor
            # always last, so neither the machine warming up nor load coming and going
            # favours it.
            for name in (("drain", "campaign", "personal") if i % 2 == 0 else ("personal", "campaign", "drain")):
                runs[name].append(run_phase(name, args, smtp, i))
    fig = _rounds(runs)
    campaign = runs["campaign"][0]
    print(json.dumps({
        "bench": "campaign", "contacts": args.contacts, "sink": kind, "rounds": rounds,
        "engine": "postgresql" if (args.db or "").startswith("postgresql") else "sqlite",
        "campaign_mails_per_second": round(fig["campaign_rate"], 1),
        "drain_mails_per_second": round(fig["drain_rate"], 1),
        "ratio": fig["ratio"], "target_ratio": 0.8, "ratio_spread": fig["ratio_spread"],
        "ratio_rounds": fig["ratio_rounds"],
        # Without the import (from `send` until every trace is sent), as this bench counted
        # before: the import's share of the campaign shows as the difference.
        "ratio_after_import": fig["ratio_after_import"], "ratio_after_import_spread": fig["ratio_after_import_spread"],
        "personalised_mails_per_second": round(fig["personal_rate"], 1),
        "personalisation_cost": fig["personalisation_cost"], "target_personalisation_cost": 0.2,
        "personalisation_cost_spread": fig["personalisation_cost_spread"],
        "personalisation_cost_rounds": fig["personalisation_cost_rounds"],
        "personalised_mails": min(r["mails"] for r in runs["personal"]),
        # The same two comparisons in CPU time per mail of the Postroom process (less
        # sensitive to other load on the machine than the wall-clock rates above).
        "cpu_ratio": fig["cpu_ratio"], "cpu_ratio_spread": fig["cpu_ratio_spread"],
        "personalisation_cpu_cost": fig["personalisation_cpu_cost"],
        "personalisation_cpu_cost_spread": fig["personalisation_cpu_cost_spread"],
        "personalisation_cpu_cost_rounds": fig["personalisation_cpu_cost_rounds"],
        "cpu_ms_per_mail": {label: round(1000 * fig[k + "_cpu"], 3)
                            for k, label in (("campaign", "campaign"), ("drain", "drain"), ("personal", "personalised"))},
        "mails_per_second_rounds": {label: fig[k + "_rates"]
                                    for k, label in (("campaign", "campaign"), ("drain", "drain"), ("personal", "personalised"))},
        "campaign_seconds": round(fig["campaign_seconds"], 2), "drain_seconds": round(fig["drain_seconds"], 2),
        "campaign_mails": min(r["mails"] for r in runs["campaign"]),
        "drain_mails": min(r["mails"] for r in runs["drain"]),
        "import_seconds": round(statistics.median(r["import_seconds"] for r in runs["campaign"]), 2),
        "seconds_by_action": campaign["seconds_by_action"],
        "personalised_seconds_by_action": runs["personal"][0]["seconds_by_action"],
        "campaign_peak_memory_mb": max(r["peak_memory_mb"] for r in runs["campaign"]),
        "campaign_peak_memory_mb_after_import": max(r["peak_memory_mb_after_import"] for r in runs["campaign"]),
        "drain_peak_memory_mb": max(r["peak_memory_mb"] for r in runs["drain"]),
    }))


if __name__ == "__main__":
    main()
