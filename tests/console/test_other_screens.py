"""Screens 4-7 over real HTTP: scheduled actions, campaigns, the inbound log, the doctor; and
a third-party plugin's screen."""
import smtplib

from postroom.core import scheduler
from postroom.core.models import CronAction
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.plugins.inbound.gateway import GatewayService
from postroom.plugins.mail_marketing.models import Campaign
from tests.support.smtp import free_port

QUEUE_ACTION = "Mail: Email Queue Manager"


def test_an_interval_under_five_minutes_is_refused_and_under_fifteen_warned(console, logged_in):
    host, url = console()
    client = logged_in(url)
    page = client.get("/cron/").text
    assert f'data-action="{QUEUE_ACTION}"' in page and "60 minutes" in page
    client.post("/cron/interval", {"name": QUEUE_ACTION, "number": "4", "unit": "minutes"})
    page = client.get("/cron/").text
    assert "Refused: " in page and "5 minutes" in page
    assert CronAction.get(CronAction.name == QUEUE_ACTION).interval_number == 60
    client.post("/cron/interval", {"name": QUEUE_ACTION, "number": "10", "unit": "minutes"})
    page = client.get("/cron/").text
    assert "every 10 minutes" in page and "Warning: an interval under 15 minutes is not recommended" in page
    assert CronAction.get(CronAction.name == QUEUE_ACTION).interval_number == 10


def test_run_now_runs_the_action_and_repeats_the_warning(console, logged_in, tmp_path):
    host, url = console()
    client = logged_in(url)
    page = client.get("/cron/").text
    assert "Running a scheduled action by hand is not recommended" in page
    client.post("/cron/run", {"name": QUEUE_ACTION})
    page = client.get("/cron/").text
    assert f"{QUEUE_ACTION}: done 0, remaining 0" in page and "not recommended" in page
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert f"console: operator ops@example.com: ran '{QUEUE_ACTION}' by hand" in log


class BrokenTemplates:
    """Personalisation that fails for the campaigns named in `broken`: a stuck head."""
    PLUGIN = PluginInfo("broken_templates", "personalises campaign mails (badly)")

    def __init__(self):
        self.broken = {"Spring news"}

    @hookimpl
    def postroom_campaign_batch(self, host, campaign, mails):
        if campaign.subject in self.broken:
            raise RuntimeError(f"unknown placeholder {{first_name}} in {campaign.subject}")


def _campaign(cli_run, host, tmp_path, subject):
    body = tmp_path / "body.html"
    body.write_text("<p>Hello</p>")
    result = cli_run(host, "campaign", "create", "--subject", subject, "--body-file", body, "--list", "news")
    campaign_id = result.output.split()[-1]
    assert cli_run(host, "campaign", "send", campaign_id).exit_code == 0
    return int(campaign_id)


def stuck_head(console, cli_run, tmp_path, clock):
    """Two campaigns to one list of two; the first fails its batch and holds the head.
    Returns (host, url, stuck id, waiting id)."""
    broken = BrokenTemplates()
    host, url = console(plugins=("mail_marketing",), extra=[broken], daily_limit=1000)
    host.enable_plugin("broken_templates")
    cli_run(host, "list", "create", "news")
    (tmp_path / "news.csv").write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    cli_run(host, "list", "import", "news", tmp_path / "news.csv")
    stuck = _campaign(cli_run, host, tmp_path, "Spring news")
    clock.advance(seconds=1)
    waiting = _campaign(cli_run, host, tmp_path, "Summer news")
    scheduler.run_due(host, limit=100)
    return host, url, stuck, waiting


def test_cancel_a_stuck_campaign_head_and_the_next_one_goes(console, logged_in, cli_run, tmp_path, sink, clock):
    host, url, stuck, waiting = stuck_head(console, cli_run, tmp_path, clock)
    client = logged_in(url)
    page = client.get("/campaigns/").text
    head = page.split(f'data-campaign="{stuck}"')[1].split("</tr>")[0]
    assert "<strong>head</strong>" in head and "unknown placeholder {first_name}" in head
    assert "in_queue" in page.split(f'data-campaign="{waiting}"')[1].split("</tr>")[0]
    assert client.post(f"/campaigns/{stuck}/cancel").status == 303
    assert "Campaign %d canceled: back to draft" % stuck in client.get("/campaigns/").text
    assert Campaign.get_by_id(stuck).state == "draft"
    scheduler.run_due(host, limit=100)
    assert Campaign.get_by_id(waiting).state == "done"
    assert sorted(r for m in sink.wait_for(2) for r in m.rcpt_tos) == ["ann@example.org", "bob@example.org"]
    detail = client.get(f"/campaigns/{waiting}").text
    assert "2 (100.0%)" in detail and "ann@example.org" in detail
    assert "ann@example.org" not in client.get(f"/campaigns/{waiting}?status=error").text
    client.post(f"/campaigns/{stuck}/retry-failed")
    assert "Refused: campaign %d is draft" % stuck in client.get(f"/campaigns/{stuck}").text
    assert "canceled campaign" in (tmp_path / "logs" / "postroom.log").read_text()


def test_a_refused_inbound_mail_is_found_in_the_log_and_an_accepted_ones_original_downloaded(
        console, logged_in, cli_run):
    host, url = console(plugins=("inbound",))
    assert cli_run(host, "alias", "add", "support", "--model", "generic").exit_code == 0
    gateway = GatewayService(host, "127.0.0.1", free_port())
    gateway.start()
    try:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            smtp.mail("stranger@elsewhere.test")
            code, _ = smtp.rcpt("nobody@example.com")
            assert code == 550
            smtp.rset()
            smtp.sendmail("ann@client.test", ["support@example.com"],
                          b"From: Ann <ann@client.test>\r\nTo: support@example.com\r\nSubject: Printer\r\n"
                          b"Message-Id: <p1@client.test>\r\n\r\nIt smokes\r\n")
    finally:
        gateway.stop()
    client = logged_in(url)
    refused = client.get("/inbound/?verdict=refused&sender=stranger@elsewhere.test").text
    assert "nobody@example.com" in refused and "550" in refused and "mailbox unavailable" in refused
    assert "support@example.com" not in refused.split("<tbody>")[1]
    accepted = client.get("/inbound/?recipient=support").text
    decision = accepted.split('data-decision="')[1].split('"')[0]
    original = client.get(f"/inbound/{decision}/original")
    assert original.status == 200 and b"It smokes" in original.body
    assert client.get("/inbound/?since=2030-01-01").text.count("data-decision=") == 0
    assert client.get("/inbound/?since=2026-01-05&until=2026-01-05").text.count("data-decision=") == 2


def test_the_doctor_screen_shows_the_last_run_with_its_age_and_runs_the_checks_on_request(
        console, logged_in, clock, cli_run):
    host, url = console(dns_resolver="127.0.0.1:9", dns_timeout="0.2")
    client = logged_in(url)
    first = client.get("/doctor/").text
    assert "have not run yet" in first and "Run checks now" in first and "status-" not in first

    ran = client.post("/doctor/run")
    assert ran.status == 303 and ran.headers["location"] == "/doctor/"
    page = client.get("/doctor/").text
    assert "Checks run: " in page and "Checked just now" in page and "by ops@example.com (console)" in page
    assert "admin_email" in page and "dns.spf" in page and "status-" in page and "may no longer" not in page

    clock.advance(hours=2)
    stale = client.get("/doctor/").text
    assert "Checked 2 hours ago" in stale and "may no longer be the current state" in stale

    cli_run(host, "doctor")  # the command line's run is the last one now
    assert "Checked just now" in client.get("/doctor/").text
    assert "by postroom doctor" in client.get("/doctor/").text


def test_a_read_only_operator_sees_the_last_run_but_cannot_run_the_checks(console, logged_in, cli_run):
    host, url = console(dns_resolver="127.0.0.1:9", dns_timeout="0.2")
    cli_run(host, "doctor")
    viewer = logged_in(url, "viewer@example.com")
    page = viewer.get("/doctor/").text
    assert "admin_email" in page and "Run checks now" not in page and "postroom doctor" in page
    assert viewer.post("/doctor/run").status == 403


def test_a_deployment_has_a_screen_only_for_its_enabled_plugins(console, logged_in):
    host, url = console(plugins=())
    client = logged_in(url)
    home = client.get("/").text
    assert 'href="/records/"' in home and 'href="/queue/"' not in home
    assert client.get("/queue/").status == 404


class Helpdesk:
    """A third-party plugin with a screen of its own."""
    PLUGIN = PluginInfo("desk_fx", "a screen from outside")

    @hookimpl
    def postroom_http_routes(self, register):
        from starlette.routing import Route

        from postroom.core.console.frame import render

        def tickets(request):
            return render(request, "home.html", {"enabled": ["tickets from desk_fx"]})
        register("/desk", [Route("/", tickets, methods=["GET"])], nav="Desk")


def test_a_third_party_plugin_adds_its_screen_behind_the_login(console, logged_in):
    host, url = console(plugins=("desk_fx",), available={"desk_fx": Helpdesk()})
    client = logged_in(url)
    assert 'href="/desk/">Desk</a>' in client.get("/").text
    assert "tickets from desk_fx" in client.get("/desk/").text
    from tests.support.http import request
    assert request(url, "GET", "/desk/").status == 303


def test_doctor_warns_when_the_console_listens_beyond_loopback_without_https(make_host, cli_run):
    import json
    for config, status in [({}, "ok"), ({"http_host": "0.0.0.0"}, "warn"),
                           ({"http_host": "0.0.0.0", "public_url": "http://mail.example.com"}, "warn"),
                           ({"http_host": "0.0.0.0", "public_url": "https://mail.example.com"}, "ok")]:
        host = make_host(config=dict(config, dns_resolver="127.0.0.1:9", dns_timeout="0.2"))
        checks = json.loads(cli_run(host, "doctor", "--json").output)["checks"]
        (check,) = [c for c in checks if c["name"] == "http.exposure"]
        assert check["status"] == status, (config, check)
        if status == "warn":
            assert "not https" in check["finding"] and "TLS-terminating proxy" in check["remedy"]
        host.close()


def test_a_campaigns_traces_filter_by_status_and_cancel_reason(console, logged_in, cli_run, tmp_path, sink):
    host, url = console(plugins=("mail_marketing",), daily_limit=1000)
    cli_run(host, "list", "create", "news")
    (tmp_path / "news.csv").write_text("email,name\nann@example.org,Ann\ncarol@example.org,Carol\n")
    cli_run(host, "list", "import", "news", tmp_path / "news.csv")
    cli_run(host, "blacklist", "add", "carol@example.org", "--reason", "asked by phone")
    campaign_id = _campaign(cli_run, host, tmp_path, "Autumn news")
    scheduler.run_due(host, limit=100)
    client = logged_in(url)
    page = client.get(f"/campaigns/{campaign_id}").text
    assert "blacklisted 1" in page and "1 (50.0%)" in page
    blacklisted = client.get(f"/campaigns/{campaign_id}?status=canceled&reason=blacklisted").text
    assert "carol@example.org" in blacklisted and "ann@example.org" not in blacklisted
    sent = client.get(f"/campaigns/{campaign_id}?status=sent").text
    assert "ann@example.org" in sent and "carol@example.org" not in sent


def test_retry_failed_recipients_of_a_campaign(console, logged_in, cli_run, tmp_path):
    from tests.support.smtp import SMTPSink
    with SMTPSink(rcpt_replies={"bob@example.org": "550 5.1.1 <bob@example.org>: unknown"}) as refusing:
        host, url = console(plugins=("mail_marketing",), daily_limit=1000, smtp_port=refusing.port)
        cli_run(host, "list", "create", "news")
        (tmp_path / "news.csv").write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
        cli_run(host, "list", "import", "news", tmp_path / "news.csv")
        campaign_id = _campaign(cli_run, host, tmp_path, "Winter news")
        scheduler.run_due(host, limit=100)
        client = logged_in(url)
        page = client.get(f"/campaigns/{campaign_id}").text
        assert "Retry 1 failed recipient(s)" in page
        client.post(f"/campaigns/{campaign_id}/retry-failed")
        assert "1 failed recipient(s) of campaign %d queued again" % campaign_id in client.get(f"/campaigns/{campaign_id}").text
