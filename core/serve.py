"""`postroom serve`: run due actions and plugin services until SIGTERM or Ctrl-C.

Roles let an operator split work: `scheduler` runs scheduled actions only, `inbound` runs the
plugins' services only (e.g. the inbound gateway), `http` the HTTP service only, `all` all
three. With `--workers K` a
supervisor starts K processes, restarts a child that dies, and forwards SIGTERM/SIGINT to
all of them: with `--role all` the services run once, in the first child, the others run
scheduled actions; with `--role inbound` every child runs a gateway on the same port
(SO_REUSEPORT), so inbound mail uses K processes (on PostgreSQL; SQLite has one writer).
"""
import os
import signal
import subprocess
import sys
import threading
import time

from . import scheduler
from .errors import Conflict, first_line

ROLES = ("all", "scheduler", "inbound", "http")
# The longest wait between two tries of a failing scheduler loop (database away, disk
# full): long enough not to flood the log, short enough to resume promptly.
MAX_BACKOFF = 30.0


def _announce(host, role, owner, services) -> None:
    """Tell the operator at the terminal what this process runs and how to stop it (stderr,
    so stdout stays clean)."""
    lines = [f"postroom serve: worker {owner}, role {role}"]
    if role in ("all", "scheduler"):
        names = sorted(spec.name for spec in host.action_specs.values())
        lines.append(f"  scheduled actions: {', '.join(names) or 'none'}")
    for service in services.items:
        name = getattr(service, "name", type(service).__name__)
        if hasattr(service, "bind_host") and hasattr(service, "port"):
            name = f"{name}" if f"{service.port}" in str(name) else f"{name} on {service.bind_host}:{service.port}"
        lines.append(f"  service: {name}")
    lines.append("  stop with Ctrl-C or SIGTERM (the action in hand finishes its batch first)")
    print("\n".join(lines), file=sys.stderr, flush=True)


class Services:
    """Long-running services plugins registered through `postroom_serve`."""

    def __init__(self, items=()):
        self.items = list(items)

    def register(self, service):
        self.items.append(service)

    def start(self, host):
        for i, service in enumerate(self.items):
            name = getattr(service, "name", service)
            try:
                service.start()
            except (OSError, OverflowError) as exc:
                # A busy or impossible port: one clear line, like `inbound serve`, and the
                # services already started are stopped again.
                Services(self.items[:i]).stop(host)
                where = (f"{service.bind_host}:{service.port}" if hasattr(service, "bind_host")
                         and hasattr(service, "port") else str(name))
                raise Conflict(f"{name}: cannot listen on {where}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
            host.log.info("service %s started", name)

    def stop(self, host):
        for service in reversed(self.items):
            try:
                service.stop()
                host.log.info("service %s stopped", getattr(service, "name", service))
            except Exception:  # noqa: BLE001 - stop the others whatever happens
                host.log.exception("service %s failed to stop", getattr(service, "name", service))


def serve(host, stop_event: threading.Event | None = None, install_signals: bool = True,
          role: str = "all", announce: bool = False, http_service=None) -> None:
    """Loop: run every due action, then sleep until the next is due (at most the poll
    interval, so triggers written by other processes are seen). Returns when stopped.

    `announce` prints where the HTTP service listens on stderr (the CLI); `http_service`
    replaces the one built from the config (`postroom http serve --port`)."""
    stop = stop_event or threading.Event()
    host.serve_stop = stop  # a running handler sees it through run.should_stop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    services = Services()
    if role in ("all", "http"):
        from .http_service import HttpService
        services.register(http_service or HttpService(host, required=role == "http", announce=announce))
    if role in ("all", "inbound"):
        host.hook.postroom_serve(host=host, register=services.register)
    owner = scheduler.worker_name()
    poll = host.config.getfloat("serve_poll_seconds", 5.0)
    host.log.info("serve started (worker %s, role %s, plugins: %s)", owner, role,
                  ", ".join(host.enabled) or "none")
    services.start(host)
    if announce:
        _announce(host, role, owner, services)
    errors = 0  # loop errors in a row: the wait after each doubles, up to MAX_BACKOFF
    try:
        while not stop.is_set():
            if role in ("inbound", "http"):
                stop.wait(poll)
                continue
            try:
                ran = scheduler.run_due(host, owner)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the worker
                errors += 1
                backoff = min(MAX_BACKOFF, poll * 2 ** (errors - 1))
                if errors == 1:
                    host.log.exception("scheduler loop error; retrying in %.1fs", backoff)
                else:  # the traceback was logged once for this outage
                    host.log.error("scheduler loop error (%d in a row): %s: %s; retrying in %.1fs",
                                   errors, type(exc).__name__, first_line(exc), backoff)
                _close_quietly(host)
                stop.wait(backoff)
                continue
            if errors:
                host.log.info("scheduler loop works again after %d error(s)", errors)
                errors = 0
            if ran:
                continue
            wait = poll
            try:
                nxt = scheduler.next_due_at(host) if not stop.is_set() else None
            except Exception:  # noqa: BLE001 - same: reconnect on the next round
                nxt = None
                _close_quietly(host)
            if nxt is not None:
                wait = max(0.05, min(poll, (nxt - host.clock.now()).total_seconds()))
            stop.wait(wait)
    finally:
        host.serve_stop = None
        services.stop(host)
        host.log.info("serve stopped (worker %s)", owner)


def _close_quietly(host):
    try:
        host.db.close()
    except Exception:  # noqa: BLE001 - a broken connection is dropped all the same
        pass


def supervise(config_path: str | None, workers: int, role: str, log) -> int:
    """Run `workers` child processes of `postroom serve` and keep them running."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    base = [sys.executable, "-m", "postroom.cli"] + (["--config", config_path] if config_path else []) + ["serve"]
    roles = [role if role != "all" else ("all" if i == 0 else "scheduler") for i in range(workers)]
    children = [None] * workers
    env = dict(os.environ)
    if roles.count("inbound") > 1:
        # K gateways on one port: each child's listener sets SO_REUSEPORT (plugins/inbound).
        env["POSTROOM_REUSE_PORT"] = "1"

    def spawn(i):
        children[i] = subprocess.Popen(base + ["--role", roles[i]], env=env)
        log.info("worker %s started (pid %s, role %s)", i, children[i].pid, roles[i])

    for i in range(workers):
        spawn(i)
    while not stop.is_set():
        for i, child in enumerate(children):
            if child.poll() is not None:
                log.warning("worker %s (pid %s) exited with %s; restarting it", i, child.pid, child.returncode)
                spawn(i)
        stop.wait(0.5)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.time() + 30
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
    log.info("supervisor stopped")
    return 0
