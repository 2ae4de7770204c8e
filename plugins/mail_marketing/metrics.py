"""mail_marketing's families for `/metrics`: campaign traces by status and campaigns by
state (two GROUP BY queries)."""
import peewee as pw
from prometheus_client.core import GaugeMetricFamily

from .models import Campaign, Trace


def families(host) -> list:
    traces = GaugeMetricFamily("postroom_marketing_traces", "Campaign traces by status",
                               labels=["status"])
    for status, n in Trace.select(Trace.status, pw.fn.COUNT(Trace.id)).group_by(Trace.status).tuples():
        traces.add_metric([status], n)
    campaigns = GaugeMetricFamily("postroom_marketing_campaigns", "Campaigns by state", labels=["state"])
    for state, n in Campaign.select(Campaign.state, pw.fn.COUNT(Campaign.id)).group_by(Campaign.state).tuples():
        campaigns.add_metric([state], n)
    return [traces, campaigns]
