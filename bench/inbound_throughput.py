"""Inbound gateway throughput: N messages over K concurrent SMTP sessions into the gateway.

Half the messages are replies to existing records (In-Reply-To a stored Message-Id), half
create a record through an alias. The same client then drives a bare aiosmtpd server whose
handler does nothing: that is the ceiling the gateway is measured against. Prints one JSON
line: messages per second and the p50/p99 latency of DATA (ms) for both.

    python bench/inbound_throughput.py [--messages 5000] [--sessions 8] [--db URL]

With `--client smtp-source` the client is Postfix's smtp-source (C, Debian's postfix
package), run as `smtp-source -s SESSIONS -m MESSAGES -d` against the gateway and then
against the bare aiosmtpd server in the same run; every message goes to the alias, so each
one creates a record. DATA latency is then measured inside the server (end of data to the
reply), since smtp-source does not report it. `--repeat R` measures R rounds (the bare
server, the gateway, the bare server again: each round's ratio is to the mean of its two
bare runs) and reports the median round with every round's ratio, rate and p99: the
gateway and the bare server are CPU-bound, so on a host that lends its cores to other
guests one round proves little. `--gateways 1,2` (PostgreSQL) runs
`postroom serve --role inbound --workers K` processes on one port instead of the in-process
gateway and prints the rate for each K and the ratio to the first; with `--repeat R`, R
rounds of every K (the order turned round every other round), each round's ratio to its own
first K, the median round reported with every round's ratio. (Without it, the bare
server runs before and after the in-process gateway: the ratio is to the mean of the two,
and each side's CPU milliseconds per message in this process are printed too, the gateway's
also by thread: event-loop, inbound-db pool, writer. `--profile FILE` profiles each gateway
thread: FILE.txt merged, FILE.<thread>.txt each kind alone.) Each K starts from an
empty decision log, sends `--warmup` messages unmeasured, then the same smtp-source run; it
reports how many sessions and messages each gateway process got (SO_REUSEPORT spreads the
8 sessions by a hash, not evenly), the CPU milliseconds per message of the gateways, of
the PostgreSQL backends (when the server is local) and of the client, and how many cores
that kept busy: on a 2-core machine shared with other work, compare those, not only rates.
"""
import argparse
import asyncio
import contextlib
import cProfile
import pstats
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiosmtplib  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from postroom.core import chatter, records  # noqa: E402
from postroom.core.config import Config  # noqa: E402
from postroom.core.errors import Conflict  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from postroom.core.models import Message, Record  # noqa: E402
from postroom.plugins.inbound import aliases  # noqa: E402
from postroom.plugins.inbound.gateway import GatewayService  # noqa: E402
from tests.support.smtp import free_port  # noqa: E402

import procstat  # noqa: E402  (bench/, beside this file)


class Nothing:
    """The ceiling: a handler that accepts every message and does nothing with it."""

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def messages(n, parents):
    """(rcpt, bytes) pairs: even ones reply to a stored message, odd ones go to the alias."""
    out = []
    for i in range(n):
        sender = f"client{i}@bench.test"
        if i % 2 == 0:
            parent = random.choice(parents)
            head = f"To: catchall@example.com\r\nIn-Reply-To: {parent}\r\nSubject: Re: thread\r\n"
            rcpt = "catchall@example.com"
        else:
            head = f"To: support@example.com\r\nSubject: Request {i}\r\n"
            rcpt = "support@example.com"
        body = (f"From: Client {i} <{sender}>\r\n{head}Message-Id: <bench{i}.{time.time_ns()}@bench.test>\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\nHello, this is message {i}.\r\n" + "Some text.\r\n" * 20)
        out.append((sender, rcpt, body.encode()))
    return out


async def drive(port, batch, sessions):
    """Send `batch` over `sessions` concurrent connections; returns (seconds, DATA latencies, failures)."""
    latencies, failures = [], []
    queue = asyncio.Queue()
    for item in batch:
        queue.put_nowait(item)

    async def session():
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        await client.ehlo()
        try:
            while not queue.empty():
                sender, rcpt, data = queue.get_nowait()
                await client.mail(sender)
                await client.rcpt(rcpt)
                start = time.perf_counter()
                try:
                    reply = await client.data(data)
                    if reply.code != 250:
                        failures.append(reply.message)
                except aiosmtplib.SMTPResponseException as exc:
                    failures.append(f"{exc.code} {exc.message}")
                    await client.rset()
                latencies.append(time.perf_counter() - start)
        finally:
            await client.quit()
    start = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    return time.perf_counter() - start, latencies, failures


def figures(seconds, latencies, failures, n):
    ordered = sorted(latencies)
    return {"msgs_per_s": round(n / seconds, 1), "seconds": round(seconds, 2),
            "data_p50_ms": round(statistics.median(ordered) * 1000, 2),
            "data_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "failed": len(failures), "first_failure": failures[0] if failures else None}


SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
# Loop protection would (rightly) refuse one sender creating thousands of records.
BENCH_LIMITS = {"inbound_loop_max": "100000000", "inbound_loop_max_peer": "100000000"}


def smtp_source(port, n, sessions) -> float:
    """Seconds smtp-source takes to send n messages over `sessions` kept-open sessions."""
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-d", "-l", "500",
           "-f", "client@bench.test", "-t", "support@example.com", f"127.0.0.1:{port}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=600)
    return time.perf_counter() - t0


def timed_data(handler, latencies):
    """Wrap handler.handle_DATA to record how long each DATA took inside the server (the
    gateway answers only after its commit, so this is what a client waits for)."""
    inner = handler.handle_DATA

    async def handle_DATA(server, session, envelope):
        start = time.perf_counter()
        try:
            return await inner(server, session, envelope)
        finally:
            latencies.append(time.perf_counter() - start)
    handler.handle_DATA = handle_DATA


def latency_figures(seconds, latencies, n):
    ordered = sorted(latencies) or [0.0]
    return {"msgs_per_s": round(n / seconds, 1), "seconds": round(seconds, 2),
            "data_p50_ms": round(statistics.median(ordered) * 1000, 2),
            "data_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)}


def smtp_source_run(args, host, tmp):
    result = {"bench": "inbound_throughput", "client": "smtp-source", "engine": host.db.engine,
              "messages": args.messages, "sessions": args.sessions, "db_threads": args.threads,
              "cpus": os.cpu_count(), "warmup": args.warmup if args.gateways else 0}
    if args.gateways:
        # The bare server too, before and after, so that each K has its ratio to the
        # ceiling measured in the same run (SQLite: is K processes a deployment that helps?).
        # With --repeat R, R rounds of every K, the order turned round every other round
        # (1,2 then 2,1: a load that grows or fades weighs on each K alike); each round's
        # scaling is to its own smallest K, and the median round is reported, with every
        # round's scaling.
        ceilings = [ceiling_run(args)]
        ks = sorted(int(x) for x in args.gateways.split(","))
        rounds = []
        for i in range(max(1, args.repeat)):
            rates = {}
            for k in (ks if i % 2 == 0 else ks[::-1]):
                rates[k] = gateway_processes(args, host, tmp, k)
            rounds.append({k: rates[k] for k in ks})
        ceilings.append(ceiling_run(args))

        def scaling(rates):
            return {k: r["msgs_per_s"] / rates[ks[0]]["msgs_per_s"] for k, r in rates.items()}
        last = ks[-1]
        median = sorted(range(len(rounds)), key=lambda i: scaling(rounds[i])[last])[len(rounds) // 2]
        rates = rounds[median]
        result["rounds"] = len(rounds)
        result["gateways"] = {str(k): r for k, r in rates.items()}
        result["scaling"] = {str(k): round(v, 3) for k, v in scaling(rates).items()}
        result["scaling_rounds"] = {str(k): [round(scaling(r)[k], 3) for r in rounds] for k in ks[1:]}
        result["msgs_per_s_rounds"] = {str(k): [r[k]["msgs_per_s"] for r in rounds] for k in ks}

        # What K could reach at most on this machine: every core busy (gateways, database,
        # client) at the CPU each message cost in that round, against the smallest K's rate
        # in the same round. A scaling goal above this figure cannot be met here whatever
        # the gateways wait for; only less CPU per message (or more cores) raises it.
        def at_full_cores(r, k):
            ms = sum(v for v in r[k]["cpu_ms_per_msg"].values() if v)
            return (os.cpu_count() * 1000 / ms) / r[ks[0]]["msgs_per_s"]
        result["scaling_at_full_cores_rounds"] = {
            str(k): [round(at_full_cores(r, k), 3) for r in rounds] for k in ks[1:]}
        result["scaling_at_full_cores"] = {
            str(k): round(statistics.median(at_full_cores(r, k) for r in rounds), 3) for k in ks[1:]}
        result["ceiling_before"], result["ceiling"] = ceilings
        mean = statistics.mean(c["msgs_per_s"] for c in ceilings)
        result["gateways_vs_ceiling"] = {str(k): round(r["msgs_per_s"] / mean, 3) for k, r in rates.items()}
        return result
    # On a shared machine the load drifts during a run (here: up to a third of the CPU
    # stolen by other guests of the host, from one second to the next): each round measures
    # the bare server before and after the gateway (its ratio is to the mean of the two),
    # and with --repeat R the median round is reported, with every round's figure. The
    # load average is printed before and after, and each side's CPU time per message in
    # this process (all its threads), which the load disturbs less than the rates.
    result["load_1min"] = [round(os.getloadavg()[0], 2)]
    rounds = []
    profiling = ThreadProfiles(args.profile) if args.profile else contextlib.nullcontext()
    service = GatewayService(host, "127.0.0.1", free_port())
    with profiling:  # the gateway's threads start and end within it
        service.start()
        try:
            ceiling = ceiling_run(args)
            for _ in range(max(1, args.repeat)):
                latencies = []
                gateway = measure_gateway(args, host, service, latencies)
                after = ceiling_run(args)
                rounds.append((ceiling, gateway, after))
                ceiling = after  # the next round's "before"
        finally:
            service.stop()
    result["load_1min"].append(round(os.getloadavg()[0], 2))

    def ratio(r):
        return r[1]["msgs_per_s"] / statistics.mean(c["msgs_per_s"] for c in (r[0], r[2]))

    def cpu_ratio(r):
        return statistics.mean(c["cpu_ms_per_message"] for c in (r[0], r[2])) / r[1]["cpu_ms_per_message"]

    ratios = [ratio(r) for r in rounds]
    median = sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]
    result["rounds"] = len(rounds)
    result["ceiling_before"], result["gateway"], result["ceiling"] = rounds[median]  # the median round
    result["gateway_vs_ceiling"] = round(ratios[median], 3)
    result["gateway_vs_ceiling_rounds"] = [round(x, 3) for x in ratios]
    result["cpu_ceiling_vs_gateway"] = round(statistics.median(cpu_ratio(r) for r in rounds), 3)
    result["cpu_ceiling_vs_gateway_rounds"] = [round(cpu_ratio(r), 3) for r in rounds]
    result["gateway_msgs_per_s_rounds"] = [r[1]["msgs_per_s"] for r in rounds]
    result["ceiling_msgs_per_s_rounds"] = [rounds[0][0]["msgs_per_s"]] + [r[2]["msgs_per_s"] for r in rounds]
    result["data_p99_ms_rounds"] = [r[1]["data_p99_ms"] for r in rounds]
    return result


class ThreadProfiles:
    """cProfile in every thread started while it is on (the gateway's event loop, its pool
    threads and its writer), merged into one pstats report when it ends: where the
    gateway's CPU time goes, whichever thread spends it."""

    def __init__(self, path):
        self.path, self.profiles, self.lock = path, [], threading.Lock()

    def __enter__(self):
        self.run = threading.Thread.run
        profiles, lock, run = self.profiles, self.lock, self.run

        def profiled(thread):
            profile = cProfile.Profile(time.thread_time)  # CPU, not waits (GIL, locks, I/O)
            profile.enable()
            try:
                run(thread)
            finally:
                profile.disable()
                with lock:
                    profiles.append((thread.name, profile))
        threading.Thread.run = profiled
        return self

    def __exit__(self, *exc):
        threading.Thread.run = self.run
        if not self.profiles:
            return
        stats = pstats.Stats(self.profiles[0][1])
        for _, profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(self.path)
        with open(self.path + ".txt", "w") as fh:
            stats.stream = fh
            stats.sort_stats("tottime").print_stats(45)
            stats.sort_stats("cumulative").print_stats(90)
        # And each kind of thread alone (the loop, the pool, the writer): under the GIL the
        # merged report hides which thread the time is on.
        kinds = {}
        for name, profile in self.profiles:
            kinds.setdefault(thread_kind(name), []).append(profile)
        for kind, profiles in kinds.items():
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                stats.add(profile)
            with open(f"{self.path}.{kind}.txt", "w") as fh:
                stats.stream = fh
                stats.sort_stats("tottime").print_stats(30)
                stats.sort_stats("cumulative").print_stats(60)
        print(f"profile of {len(self.profiles)} threads: {self.path} (.txt, .<thread>.txt)", file=sys.stderr)


def measure_gateway(args, host, service, latencies) -> dict:
    timed_data(service.controller.handler, latencies)
    before_msgs, before_recs, before_sql = Message.select().count(), Record.select().count(), host.db.statements
    cpu, threads = process_cpu(), threads_cpu()
    gateway = latency_figures(smtp_source(service.port, args.messages, args.sessions), latencies, args.messages)
    gateway["cpu_ms_per_message"] = round((process_cpu() - cpu) * 1000 / args.messages, 3)
    gateway["cpu_ms_per_message_by_thread"] = {
        name: round(seconds * 1000 / args.messages, 3) for name, seconds in threads_cpu(threads).items()}
    gateway["sql_per_message"] = round((host.db.statements - before_sql) / args.messages, 1)
    gateway["messages_stored"] = Message.select().count() - before_msgs
    gateway["records_created"] = Record.select().count() - before_recs
    return gateway


def threads_cpu(since: dict | None = None) -> dict:
    """{thread kind: CPU seconds} of this process's live threads (pool threads summed by
    their name's prefix), less `since`'s: which thread spends the gateway's CPU (the event
    loop, the pool, the writer), read from /proc, so it costs the threads nothing."""
    out = {}
    for thread in threading.enumerate():
        kind = thread_kind(thread.name)
        out[kind] = out.get(kind, 0.0) + procstat.thread_cpu_seconds(thread.native_id)
    return {kind: seconds - (since or {}).get(kind, 0.0) for kind, seconds in out.items()}


def thread_kind(name: str) -> str:
    """`event-loop` for aiosmtpd's controller thread (`Thread-N (_run)`), a pool's prefix
    for its threads (`inbound-db_3` -> `inbound-db`), else the name."""
    if name.endswith("(_run)"):
        return "event-loop"
    prefix, _, n = name.rpartition("_")
    return prefix if prefix and n.isdigit() else name


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ceiling_run(args) -> dict:
    """The bare aiosmtpd server (stores nothing) fed by the same smtp-source run."""
    latencies = []
    ceiling = Controller(Nothing(), hostname="127.0.0.1", port=free_port())
    ceiling.start()
    try:
        timed_data(ceiling.handler, latencies)
        cpu = process_cpu()
        figures = latency_figures(smtp_source(ceiling.port, args.messages, args.sessions), latencies, args.messages)
        figures["cpu_ms_per_message"] = round((process_cpu() - cpu) * 1000 / args.messages, 3)
        return figures
    finally:
        ceiling.stop()


def gateway_processes(args, host, tmp, k):
    """Rate of `postroom serve --role inbound --workers k` on one port (SO_REUSEPORT), with
    where the sessions went and where the CPU went.

    Every K starts from the same state: the decision log is emptied first. Loop protection
    counts the sender's messages within its window, and smtp-source always sends as one
    sender, so without this each K after the first would pay for the earlier runs' rows."""
    reset_decision_log(host)
    port = free_port()
    cfg = os.path.join(tmp, f"gateways{k}.cfg")
    values = {"database": args.db, "log_dir": os.path.join(tmp, f"logs{k}"), "log_level": "WARNING",
              "domains": "example.com", "inbound_port": str(port), "inbound_workers": str(args.threads),
              **BENCH_LIMITS, **args.settings}
    with open(cfg, "w") as fh:
        fh.write("[postroom]\n" + "".join(f"{key} = {v}\n" for key, v in values.items()))
    env = dict(os.environ, POSTROOM_CONFIG=cfg)
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve", "--role", "inbound",
                             "--workers", str(k)], env=env, start_new_session=True,
                            stderr=open(os.path.join(tmp, f"gateways{k}.err"), "w"))
    try:
        deadline = time.monotonic() + 60
        # Traffic starts once every gateway listens: one still binding would get no sessions.
        while True:
            pids = gateway_pids(proc.pid, k)
            if len(pids) == k and all(procstat.listens(pid, port) for pid in pids):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the gateways did not start")
            time.sleep(0.1)
        # Warm-up, not measured: every gateway opens its database connections, the sender
        # becomes a partner, caches fill.
        smtp_source(port, args.warmup, args.sessions)
        before = Record.select().count()
        cpu_before = {pid: procstat.cpu_seconds(pid) for pid in pids + backend_pids(host)}
        load_before = os.getloadavg()[0]
        owner, stop = {}, threading.Event()
        watcher = threading.Thread(target=watch_sessions, args=(pids, port, owner, stop), daemon=True)
        watcher.start()
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = smtp_source(port, args.messages, args.sessions)
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stop.set()
        watcher.join()
        backends = backend_pids(host)
        gateway_cpu = sum(procstat.cpu_seconds(pid) - cpu_before[pid] for pid in pids)
        db_cpu = sum(procstat.cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in backends)
        client_cpu = (client_after.ru_utime + client_after.ru_stime
                      - client_before.ru_utime - client_before.ru_stime)
        stored = Record.select().count() - before
        per_process = messages_per_process(host, pids, owner)
    finally:
        proc.terminate()
        proc.wait(60)
    n = args.messages
    return {"msgs_per_s": round(n / seconds, 1), "seconds": round(seconds, 2), "records_created": stored,
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "per_process": per_process,
            "cpu_ms_per_msg": {"gateways": round(gateway_cpu * 1000 / n, 2),
                               "database": round(db_cpu * 1000 / n, 2) if backends else None,
                               "client": round(client_cpu * 1000 / n, 2)},
            "cores_busy": round((gateway_cpu + db_cpu + client_cpu) / seconds, 2)}


def reset_decision_log(host):
    """Empty the decision log and the originals (the bench database's own rows), and let
    PostgreSQL forget them (VACUUM drops their index entries, ANALYZE the stale counts)."""
    for table in ("inbound_decision", "inbound_original"):
        host.db.execute_sql(f'DELETE FROM "{table}"')
        if host.db.engine == "postgresql":
            host.db.execute_sql(f'VACUUM ANALYZE "{table}"')


def gateway_pids(supervisor: int, k: int) -> list[int]:
    """The gateway processes: the supervisor's children with --workers > 1, else itself."""
    return procstat.children(supervisor) if k > 1 else [supervisor]


def backend_pids(host) -> list[int]:
    """PostgreSQL backends serving the bench database, when the server runs on this machine."""
    if host.db.engine != "postgresql":
        return []  # SQLite works inside the gateway processes
    rows = host.db.execute_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()").fetchall()
    return [pid for (pid,) in rows if os.path.exists(f"/proc/{pid}/stat")]


def watch_sessions(pids, port, owner, stop):
    """Fill owner {client port: gateway index} with the sessions each gateway holds."""
    while not stop.is_set():
        for index, pid in enumerate(pids):
            for client_port in procstat.client_ports(pid, port):
                owner[client_port] = index
        stop.wait(0.2)


def messages_per_process(host, pids, owner) -> list[dict]:
    """Sessions and accepted messages of each gateway, from the decision log's peer column."""
    counts = [{"pid": pid, "sessions": 0, "messages": 0} for pid in pids]
    for index in owner.values():
        counts[index]["sessions"] += 1
    rows = host.db.execute_sql("SELECT peer, COUNT(*) FROM inbound_decision WHERE verdict = 'accepted' "
                               "GROUP BY peer").fetchall()
    for peer, n in rows:
        index = owner.get(int(peer.rpartition(":")[2] or 0))
        if index is not None:
            counts[index]["messages"] += n
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="gateway database threads")
    parser.add_argument("--warmup", type=int, default=200, help="messages sent before measuring (--gateways)")
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--client", choices=("aiosmtplib", "smtp-source"), default="aiosmtplib",
                        help="smtp-source: Postfix's C client, every message to the alias")
    parser.add_argument("--profile", metavar="FILE",
                        help="with --client smtp-source (in-process gateway): cProfile every gateway "
                             "thread, write the merged stats to FILE and FILE.txt")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --client smtp-source: rounds of bare server, gateway, bare server (in-process "
                             "gateway), or of every --gateways K (order turned round every other round); the "
                             "median round is reported, with every round's figures")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key for the gateway (repeatable), e.g. inbound_commit_delay_ms=0")
    parser.add_argument("--gateways", help="with --client smtp-source and a PostgreSQL --db: e.g. 1,2 "
                                           "gateway processes on one port")
    args = parser.parse_args()
    if args.gateways and args.client != "smtp-source":
        parser.error("--gateways needs --client smtp-source")
    tmp = tempfile.mkdtemp(prefix="postroom-bench-")
    url = args.db = args.db or f"sqlite:///{tmp}/bench.db"
    values = {"database": url, "log_dir": tmp, "log_level": "WARNING", "domains": "example.com",
              "inbound_workers": str(args.threads),
              # Thousands of senders share one loopback address here: no per-client loop limit.
              "inbound_loop_max_peer": str(args.messages + 1)}
    if args.client == "smtp-source":
        values.update(BENCH_LIMITS)
    args.settings = {}  # --set, for the in-process gateway and the `serve` processes alike
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, not {item!r}")
        args.settings[key.strip()] = value.strip()
    values.update(args.settings)
    host = Host(Config(values, base_dir=tmp)).open()
    host.enable_plugin("inbound")
    try:
        aliases.add_alias(host, "support", "generic")
    except Conflict:  # a PostgreSQL bench database used before
        pass
    if args.client == "smtp-source":
        if not os.path.exists(SMTP_SOURCE):
            raise SystemExit("smtp-source is not installed (Debian's postfix package)")
        print(json.dumps(smtp_source_run(args, host, tmp)))
        host.close()
        return
    parents = []
    for r in range(50):
        record = records.create_record(host, "generic", f"Existing record {r}")
        parents.append(chatter.post_message(host, record, "Initial", subject="thread").message_id)
    batch = messages(args.messages, parents)
    result = {"bench": "inbound_throughput", "engine": host.db.engine, "messages": args.messages,
              "sessions": args.sessions, "db_threads": args.threads}

    service = GatewayService(host, "127.0.0.1", free_port())
    service.start()
    try:
        before_msgs, before_recs, before_sql = Message.select().count(), Record.select().count(), host.db.statements
        gateway = figures(*asyncio.run(drive(service.port, batch, args.sessions)), args.messages)
        gateway["sql_per_message"] = round((host.db.statements - before_sql) / args.messages, 1)
        gateway["messages_stored"] = Message.select().count() - before_msgs
        gateway["records_created"] = Record.select().count() - before_recs
    finally:
        service.stop()
    result["gateway"] = gateway

    ceiling = Controller(Nothing(), hostname="127.0.0.1", port=free_port())
    ceiling.start()
    try:
        result["ceiling"] = figures(*asyncio.run(drive(ceiling.port, batch, args.sessions)), args.messages)
    finally:
        ceiling.stop()
    result["gateway_vs_ceiling"] = round(gateway["msgs_per_s"] / result["ceiling"]["msgs_per_s"], 3)
    host.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
