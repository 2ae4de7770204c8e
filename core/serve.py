"""`postroom serve`: run due actions and plugin services until SIGTERM or Ctrl-C."""
import signal
import threading

from . import scheduler


class Services:
    """Long-running services plugins registered through `postroom_serve`."""

    def __init__(self):
        self.items = []

    def register(self, service):
        self.items.append(service)

    def start(self, host):
        for service in self.items:
            service.start()
            host.log.info("service %s started", getattr(service, "name", service))

    def stop(self, host):
        for service in reversed(self.items):
            try:
                service.stop()
                host.log.info("service %s stopped", getattr(service, "name", service))
            except Exception:  # noqa: BLE001 - stop the others whatever happens
                host.log.exception("service %s failed to stop", getattr(service, "name", service))


def serve(host, stop_event: threading.Event | None = None, install_signals: bool = True) -> None:
    """Loop: run every due action, then sleep until the next is due (at most the poll
    interval, so triggers written by other processes are seen). Returns when stopped."""
    stop = stop_event or threading.Event()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    services = Services()
    host.hook.postroom_serve(host=host, register=services.register)
    owner = scheduler.worker_name()
    poll = host.config.getfloat("serve_poll_seconds", 5.0)
    host.log.info("serve started (worker %s, plugins: %s)", owner, ", ".join(host.enabled) or "none")
    services.start(host)
    try:
        while not stop.is_set():
            try:
                ran = scheduler.run_due(host, owner)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                host.log.exception("scheduler loop error; retrying in %ss", poll)
                ran = []
                host.db.close()
            if ran:
                continue
            wait = poll
            nxt = scheduler.next_due_at(host) if not stop.is_set() else None
            if nxt is not None:
                wait = max(0.05, min(poll, (nxt - host.clock.now()).total_seconds()))
            stop.wait(wait)
    finally:
        services.stop(host)
        host.log.info("serve stopped (worker %s)", owner)
