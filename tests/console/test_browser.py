"""The console in a real browser: Debian's Chromium driven by Playwright, against the real
HTTP service, real SMTP sinks and a real inbound gateway on loopback.

One browser serves the whole module (a fresh context, so fresh cookies, per test). Each
screen's screenshot is taken by this run: into a temporary folder, so that `make test`
leaves the work tree clean, or into $POSTROOM_SCREENSHOTS_DIR (`make screenshots` sets it
to docs/console/, whose pictures the README shows).
"""
import os
import re
import smtplib
import tempfile

import pytest

from postroom.core import chatter, records, scheduler
from postroom.core.models import CronAction
from postroom.plugins.inbound.gateway import GatewayService
from postroom.plugins.mail_marketing.models import Campaign
from postroom.plugins.mail_queue.models import OutgoingMail
from tests.console.conftest import PASSWORD
from tests.console.test_other_screens import QUEUE_ACTION, stuck_head
from tests.support.smtp import SMTPSink, free_port

pytestmark = pytest.mark.heavy

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("POSTROOM_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="postroom-console-shots-")
REFUSAL = "550 5.1.1 <bob@exmaple.com>: Recipient address rejected: User unknown"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def login(page, url, email="ops@example.com", next_path="/"):
    page.goto(url + next_path)
    assert "/login" in page.url  # logged out: the console sends us to the login page
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + next_path)


def test_red_envelope_after_a_real_550_then_resent_to_the_corrected_address_turns_white(console, page):
    with SMTPSink(rcpt_replies={"bob@exmaple.com": REFUSAL}) as sink:
        host, url = console(smtp_port=sink.port)
        rec = records.create_record(host, "generic", "Website redesign")
        for name, email in (("Ann Smith", "ann@example.com"), ("Bob Jones", "bob@exmaple.com")):
            records.follow(host, rec, records.create_partner(host, name, email))
        chatter.post_message(host, rec, "Kick-off tomorrow at 10, room 2.", subject="Kick-off")
        msg = chatter.post_message(host, rec, "The agenda is attached to the invite.", subject="Agenda")
        sink.wait_for(2)
        login(page, url, next_path=f"/records/generic/{rec.id}")
        envelope = page.locator(f"#message-{msg.id} [data-envelope]")
        assert envelope.get_attribute("data-envelope") == "red"
        shot(page, "1-record-chatter")
        envelope.click()
        page.wait_for_url(re.compile(rf".*/queue/message/{msg.id}$"))
        assert "User unknown" in page.inner_text("table")
        page.fill("input[name^=email_]", "bob@example.com")
        shot(page, "2-envelope-details")
        page.click("text=Send & close")
        page.wait_for_selector(".flash")
        assert "Resent to bob@example.com" in page.inner_text(".flash")
        assert page.locator("h1 [data-envelope]").get_attribute("data-envelope") == "white"
        assert sink.wait_for(3)[-1].rcpt_tos == ["bob@example.com"]
        page.goto(url + f"/records/generic/{rec.id}")
        assert page.locator(f"#message-{msg.id} [data-envelope]").get_attribute("data-envelope") == "white"


def test_retry_a_failed_mail_in_the_queue(console, page):
    with SMTPSink(data_reply="550 5.7.1 The from address does not match a verified Sender Identity") as sink:
        host, url = console(smtp_port=sink.port)
        rec = records.create_record(host, "generic", "Invoices")
        records.follow(host, rec, records.create_partner(host, "Carol", "carol@example.com"))
        chatter.post_message(host, rec, "Invoice 2026-001 is ready.", subject="Invoice")
        failed = OutgoingMail.get(OutgoingMail.state == "exception")
        login(page, url, next_path="/queue/?state=exception")
        row = page.locator(f"tr[data-mail='{failed.id}']")
        assert "delivery failed" in row.inner_text()
        shot(page, "3-email-queue")
        page.click(f"tr[data-mail='{failed.id}'] a")
        assert "verified Sender Identity" in page.inner_text(".error")
        shot(page, "3-mail-details")
        page.click("button:has-text('Retry')")
        page.wait_for_selector(".flash")
        assert "1 mail(s) back to outgoing" in page.inner_text(".flash")
        assert OutgoingMail.get_by_id(failed.id).state == "outgoing"
        page.goto(url + "/limit/")
        assert "resets at" in page.inner_text("table")
        shot(page, "7-daily-limit")


def test_change_an_interval_refused_under_five_minutes(console, page):
    host, url = console()
    login(page, url, next_path="/cron/")
    row = page.locator(f"tr[data-action='{QUEUE_ACTION}']")
    row.locator("input[name=number]").fill("4")
    row.locator("button:has-text('Set interval')").click()
    page.wait_for_selector(".flash")
    assert "Refused" in page.inner_text(".flash")
    assert CronAction.get(CronAction.name == QUEUE_ACTION).interval_number == 60
    row = page.locator(f"tr[data-action='{QUEUE_ACTION}']")
    row.locator("input[name=number]").fill("15")
    row.locator("button:has-text('Set interval')").click()
    page.wait_for_selector(".flash")
    assert "every 15 minutes" in page.inner_text(".flash")
    assert "15 minutes" in page.locator(f"tr[data-action='{QUEUE_ACTION}'] .interval").inner_text()
    shot(page, "4-scheduled-actions")


def test_cancel_a_stuck_campaign_head_and_watch_the_next_start(console, page, cli_run, tmp_path, sink, clock):
    host, url, stuck, waiting = stuck_head(console, cli_run, tmp_path, clock)
    login(page, url, next_path="/campaigns/")
    head = page.locator(f"tr[data-campaign='{stuck}']")
    assert "head" in head.inner_text() and "unknown placeholder" in head.inner_text()
    shot(page, "5-campaigns")
    head.locator("button:has-text('Cancel')").click()
    page.wait_for_selector(".flash")
    assert Campaign.get_by_id(stuck).state == "draft"
    scheduler.run_due(host, limit=100)  # the process queue's next run
    page.reload()
    assert Campaign.get_by_id(waiting).state == "done"
    assert "The marketing queue is empty" in page.inner_text("table")
    page.click(f"a[href='/campaigns/{waiting}']")
    assert "2 (100.0%)" in page.inner_text("dl")
    assert len(sink.wait_for(2)) == 2


def test_find_a_refused_inbound_mail_in_the_log(console, page, cli_run):
    host, url = console(plugins=("inbound", "mail_queue"))
    cli_run(host, "alias", "add", "support", "--model", "generic")
    gateway = GatewayService(host, "127.0.0.1", free_port())
    gateway.start()
    try:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            smtp.mail("stranger@elsewhere.test")
            assert smtp.rcpt("sales@example.com")[0] == 550
    finally:
        gateway.stop()
    login(page, url, next_path="/inbound/")
    page.fill("input[name=sender]", "stranger@elsewhere.test")
    page.select_option("select[name=verdict]", "refused")
    page.click("button:has-text('Search')")
    page.wait_for_url(re.compile(r".*verdict=refused.*"))
    text = page.inner_text("tbody")
    assert "sales@example.com" in text and "550" in text and "mailbox unavailable" in text
    shot(page, "6-inbound-log")
    page.goto(url + "/doctor/")
    page.click("button:has-text('Run checks now')")
    page.wait_for_selector("text=Checked just now")
    assert "ok" in page.inner_text("tbody")
    shot(page, "7-doctor")


def test_a_csrf_less_post_and_a_logged_out_request_are_refused(console, page, browser):
    host, url = console()
    login(page, url, next_path="/queue/")
    # the browser holds a valid session cookie, but the POST carries no CSRF token
    resp = page.request.post(url + "/queue/retry", form={"all_failed": "1"})
    assert resp.status == 403 and "CSRF" in resp.text()
    # a fresh browser context has no session: a screen sends it to the login page, a POST is refused
    other = browser.new_context()
    try:
        fresh = other.new_page()
        fresh.goto(url + "/queue/")
        assert "/login" in fresh.url and fresh.locator("input[name=password]").count() == 1
        shot(fresh, "0-login")
        assert other.request.post(url + "/queue/retry", form={"all_failed": "1"}).status == 403
    finally:
        other.close()
