"""inbound's families for `/metrics`: the gateway's recorded decisions by verdict and route
(one GROUP BY; aggregated refusals count as many as they stand for)."""
import peewee as pw
from prometheus_client.core import GaugeMetricFamily

from .models import InboundDecision


def families(host) -> list:
    decisions = GaugeMetricFamily("postroom_inbound_decisions",
                                  "Inbound decisions on record (kept inbound_keep_log_days) by verdict "
                                  "(accepted, refused, tempfail) and route", labels=["verdict", "route"])
    D = InboundDecision
    for verdict, route, n in (D.select(D.verdict, D.route, pw.fn.SUM(D.repeat))
                              .group_by(D.verdict, D.route).tuples()):
        decisions.add_metric([verdict, route], int(n or 0))
    return [decisions]
