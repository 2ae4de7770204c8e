"""`/metrics` over real HTTP: OpenMetrics text Prometheus can parse, with figures read from
the database at scrape time (queue, send outcomes, inbound decisions, scheduled actions,
campaign traces), each plugin contributing its own."""
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from postroom.core.plugins import PluginInfo, hookimpl
from tests.support.http import request, running
from tests.support.smtp import SMTPSink


def scrape(url) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape, parsed by prometheus_client."""
    resp = request(url, "GET", "/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def message(to, subject="Hello") -> bytes:
    return (f"From: Ann <ann@client.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-Id: <{subject}@client.test>\r\n\r\nHi\r\n").encode()


@pytest.fixture
def sink():
    with SMTPSink(rcpt_replies={"gone@example.org": "550 5.1.1 no such user",
                                "busy@example.org": "451 4.3.0 try later"}) as server:
        yield server


@pytest.fixture
def host(make_host, sink, db_url):
    h = make_host(plugins=["mail_marketing", "inbound"], db_url=db_url,
                  config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5",
                          "daily_limit": "1000", "mail_from": "news@example.com"})
    return h


def test_metrics_report_queue_outcomes_decisions_actions_and_traces(host, cli_run, sink, clock, tmp_path):
    for to in ("ann@example.org", "bob@example.org", "gone@example.org", "busy@example.org"):
        cli_run(host, "mail", "send", "--to", to, "--subject", "s", "--body", "b")
    cli_run(host, "mail", "send", "--to", "later@example.org", "--subject", "s", "--body", "b", "--bulk")
    (tmp_path / "l.csv").write_text("email,name\ncid@example.org,Cid\n")
    (tmp_path / "b.html").write_text("<p>News</p>")
    cli_run(host, "list", "create", "news")
    cli_run(host, "list", "import", "news", str(tmp_path / "l.csv"))
    cli_run(host, "campaign", "create", "--subject", "News", "--body-file", str(tmp_path / "b.html"),
            "--list", "news")
    cli_run(host, "inbound", "deliver", "--recipient", "postmaster@example.com",
            input=message("postmaster@example.com", "m1"))
    cli_run(host, "inbound", "deliver", "--recipient", "nobody@example.com",
            input=message("nobody@example.com", "m2"))
    clock.advance(hours=2)  # the queue action (every 60 minutes) is now an hour overdue

    with running(host) as url:
        samples = scrape(url)

    # Two mails sent, one refused for good (5xx), one to retry (4xx).
    assert value(samples, "postroom_mail_queue_attempts_total", outcome="sent", failure_type="",
                 reply_class="2xx") == 2
    assert value(samples, "postroom_mail_queue_attempts_total", outcome="failed", failure_type="mail_smtp",
                 reply_class="5xx") == 1
    assert value(samples, "postroom_mail_queue_attempts_total", outcome="retry", failure_type="mail_smtp",
                 reply_class="4xx") == 1
    # The bulk mail and the one to retry wait (enqueued two hours ago: the 1d bucket).
    assert value(samples, "postroom_mail_queue_mails", state="outgoing", age="1d") == 2
    assert value(samples, "postroom_mail_queue_mails", state="exception", age="1d") == 1
    assert value(samples, "postroom_inbound_decisions", verdict="accepted", route="postmaster") == 1
    assert sum(v for (n, labels), v in samples.items()
               if n == "postroom_inbound_decisions" and ("verdict", "refused") in labels) == 1
    lag = value(samples, "postroom_scheduled_action_lag_seconds", action="Mail: Email Queue Manager")
    assert 3500 <= lag <= 7300
    assert value(samples, "postroom_scheduled_action_active", action="Mail: Email Queue Manager") == 1
    assert value(samples, "postroom_marketing_campaigns", state="draft") == 1


def test_campaign_traces_by_status(host, cli_run, sink, tmp_path):
    (tmp_path / "l.csv").write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n"
                                    "gone@example.org,Gone\n")
    (tmp_path / "b.html").write_text("<p>News</p>")
    cli_run(host, "list", "create", "news")
    cli_run(host, "list", "import", "news", str(tmp_path / "l.csv"))
    cli_run(host, "blacklist", "add", "bob@example.org")
    cid = cli_run(host, "campaign", "create", "--subject", "News", "--body-file", str(tmp_path / "b.html"),
                  "--list", "news").output.split()[-1]
    cli_run(host, "campaign", "send", cid)
    from postroom.core import scheduler
    scheduler.run_due(host, limit=100)

    with running(host) as url:
        samples = scrape(url)

    assert value(samples, "postroom_marketing_traces", status="sent") == 1
    assert value(samples, "postroom_marketing_traces", status="canceled") == 1
    assert value(samples, "postroom_marketing_traces", status="error") == 1


class Broken:
    PLUGIN = PluginInfo("broken_metrics", "metrics that fail")

    @hookimpl
    def postroom_metrics(self, host):
        raise RuntimeError("table missing")


def test_a_plugin_whose_metrics_fail_is_named_and_the_rest_still_appear(make_host):
    from postroom.core.plugins import discover
    host = make_host(available=discover() | {"broken_metrics": Broken()},
                     plugins=["mail_queue", "broken_metrics"])

    with running(host) as url:
        samples = scrape(url)

    assert value(samples, "postroom_metrics_contributor_failed", source="broken_metrics") == 1
    assert ("postroom_scheduled_action_active", frozenset({("action", "Mail: Email Queue Manager")})) in samples


def test_metrics_answers_only_get(make_host):
    with running(make_host()) as url:
        assert request(url, "POST", "/metrics", body=b"x").status == 405
