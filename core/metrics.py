"""`/metrics`: OpenMetrics text built when Prometheus scrapes, from the database.

A custom prometheus_client Collector reads the host's own tables (scheduled actions) and
asks every enabled plugin for its families through `postroom_metrics`, so the core never
reads a plugin's tables. Nothing is counted in process memory: every worker of a
deployment answers the same figures, and a restart loses nothing. The scrape runs on an
HTTP worker thread.
"""
import datetime as dt

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest  # noqa: F401 - core.web serves it

from .clock import aware
from .models import CronAction

# Upper bounds of the age buckets queue metrics use (label `age`), oldest last.
AGE_BUCKETS = (("5m", dt.timedelta(minutes=5)), ("1h", dt.timedelta(hours=1)),
               ("1d", dt.timedelta(days=1)))


def age_buckets(field, now):
    """`(label, condition)` pairs splitting rows by `now - field`: `5m`, `1h`, `1d`, `older`
    (each bucket holds what is younger than its bound and older than the one before); a
    plugin groups by them with one CASE expression."""
    import peewee as pw
    cases = [(field >= now - bound, label) for label, bound in AGE_BUCKETS]
    return pw.Case(None, cases, "older")


def _action_families(host):
    now = host.clock.now()
    lag = GaugeMetricFamily("postroom_scheduled_action_lag_seconds",
                            "How long an active scheduled action is overdue (0 when not due yet)",
                            labels=["action"])
    duration = GaugeMetricFamily("postroom_scheduled_action_last_duration_seconds",
                                 "How long the last run of a scheduled action took", labels=["action"])
    failures = GaugeMetricFamily("postroom_scheduled_action_failures",
                                 "Failures in a row of a scheduled action", labels=["action"])
    active = GaugeMetricFamily("postroom_scheduled_action_active",
                               "1 when the scheduled action is active", labels=["action"])
    rows = (CronAction.select(CronAction.name, CronAction.nextcall, CronAction.active,
                              CronAction.last_duration, CronAction.failure_count)
            .where(CronAction.code.in_(list(host.action_specs) or [""])).tuples())
    for name, nextcall, is_active, last_duration, failure_count in rows:
        overdue = (now - aware(nextcall)).total_seconds() if is_active and nextcall else 0.0
        lag.add_metric([name], max(0.0, overdue))
        if last_duration is not None:
            duration.add_metric([name], float(last_duration))
        failures.add_metric([name], failure_count or 0)
        active.add_metric([name], 1 if is_active else 0)
    return [lag, duration, failures, active]


class HostCollector:
    """Collects the host's families and the enabled plugins' at scrape time."""

    def __init__(self, host):
        self.host = host

    def collect(self):
        host = self.host
        errors = GaugeMetricFamily("postroom_metrics_contributor_failed",
                                   "1 when a plugin's metrics failed in this scrape (see postroom.log)",
                                   labels=["source"])
        yield from _action_families(host)
        for impl in host.hook.postroom_metrics.get_hookimpls():
            try:
                families = impl.function(**{n: host for n in impl.argnames}) or []
                families = list(families)
            except Exception:  # noqa: BLE001 - one plugin's failure must not hide the rest
                host.log.exception("metrics: %s failed", impl.plugin_name)
                errors.add_metric([impl.plugin_name], 1)
                continue
            yield from families
        yield errors


def render(host) -> bytes:
    """The OpenMetrics text of one scrape (blocking: database queries)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(host))
    return generate_latest(registry)
