"""Screens 1-3 over real HTTP: records and chatter, envelope details, the email queue."""
import html
import json
import re

import pytest

from postroom.core import chatter, records
from postroom.plugins.mail_queue import claims, sending
from postroom.plugins.mail_queue.models import OutgoingMail
from tests.support.smtp import SMTPSink

REFUSAL = "550 5.1.1 <bob@exmaple.com>: Recipient address rejected: User unknown"


@pytest.fixture
def refusing_sink():
    with SMTPSink(rcpt_replies={"bob@exmaple.com": REFUSAL}) as s:
        yield s


@pytest.fixture
def failed_post(console, refusing_sink):
    """A chatter post whose mail to a misspelt address got a real 550 from the sink."""
    host, url = console(smtp_port=refusing_sink.port)
    rec = records.create_record(host, "generic", "Website redesign")
    for name, email in (("Ann", "ann@example.com"), ("Bob", "bob@exmaple.com")):
        records.follow(host, rec, records.create_partner(host, name, email))
    msg = chatter.post_message(host, rec, "Kick-off tomorrow at 10", subject="Kick-off")
    refusing_sink.wait_for(1)
    assert chatter.envelope(msg) == "red"
    return host, url, rec, msg, refusing_sink


def test_the_record_page_shows_the_chatter_with_a_red_envelope_and_its_details(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    client = logged_in(url)
    listing = client.get("/records/?model=generic&q=redesign")
    assert f'href="/records/generic/{rec.id}"' in listing.text
    assert "Website" not in client.get("/records/?q=nothing-like-it").text.split("<tbody>")[1]
    page = client.get(f"/records/generic/{rec.id}").text
    assert f'href="/queue/message/{msg.id}" title="a recipient failed: see the details" data-envelope="red"' in page
    assert "bob@exmaple.com" in page and "Kick-off tomorrow at 10" in page
    details = client.get(f"/queue/message/{msg.id}").text
    assert "User unknown" in details and "mail_smtp" in details
    assert 'data-envelope="red"' in details


def test_send_and_close_resends_to_a_corrected_address_and_the_envelope_turns_white(failed_post, logged_in):
    host, url, rec, msg, sink = failed_post
    client = logged_in(url)
    details = client.get(f"/queue/message/{msg.id}").text
    nid = re.search(r'name="retry_(\d+)"', details).group(1)
    before = len(sink.received())
    resp = client.post(f"/queue/message/{msg.id}/resend", {f"retry_{nid}": "1", f"email_{nid}": "bob@example.com"})
    assert resp.status == 303
    arrived = sink.wait_for(before + 1)
    assert arrived[-1].rcpt_tos == ["bob@example.com"]
    assert chatter.envelope(msg) == "white"
    page = client.get(f"/records/generic/{rec.id}").text
    assert "Resent to bob@example.com" in page
    assert 'data-envelope="white"' in page.split(f'id="message-{msg.id}"')[1][:400]
    assert "ops@example.com (console): Send &amp; close on message" in page


def test_send_and_close_with_nobody_ticked_is_refused_with_a_message(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    client = logged_in(url)
    client.get(f"/queue/message/{msg.id}")
    resp = client.post(f"/queue/message/{msg.id}/resend", {})
    assert resp.status == 303
    assert "tick Retry for at least one recipient" in client.get(f"/queue/message/{msg.id}").text
    assert chatter.envelope(msg) == "red"


def test_ignore_all_turns_the_envelope_white(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    client = logged_in(url)
    client.get(f"/queue/message/{msg.id}")
    client.post(f"/queue/message/{msg.id}/ignore")
    assert chatter.envelope(msg) == "white"
    assert "Ignored 1 failed recipient(s)" in client.get(f"/queue/message/{msg.id}").text


def test_the_queue_filters_shows_details_and_exports_the_eml(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    client = logged_in(url)
    failed = OutgoingMail.get(OutgoingMail.state == "exception")
    page = client.get("/queue/?state=exception").text
    assert f'data-mail="{failed.id}"' in page and "delivery failed" in page and "User unknown" in page
    assert f'data-mail="{failed.id}"' not in client.get("/queue/?state=sent").text
    assert f'data-mail="{failed.id}"' in client.get("/queue/?recipient=exmaple").text
    assert f'data-mail="{failed.id}"' not in client.get("/queue/?recipient=nobody").text
    assert f'data-mail="{failed.id}"' not in client.get("/queue/?older=1h").text
    assert "<svg" in page and "failed: 1" in page
    details = client.get(f"/queue/{failed.id}").text
    assert "Recipient address rejected: User unknown" in details and html.escape(failed.message_id) in details
    eml = client.get(f"/queue/{failed.id}/eml")
    assert eml.status == 200 and eml.headers["content-type"].startswith("message/rfc822")
    assert b"Subject: Kick-off" in eml.body and b"bob@exmaple.com" in eml.body
    assert client.get("/queue/999999").status == 404


def test_retry_send_now_and_cancel_act_on_the_queue(failed_post, logged_in, tmp_path):
    host, url, rec, msg, sink = failed_post
    client = logged_in(url)
    failed = OutgoingMail.get(OutgoingMail.state == "exception")
    client.get("/queue/")
    assert client.post("/queue/retry", {"id": str(failed.id)}).status == 303
    assert OutgoingMail.get_by_id(failed.id).state == "outgoing"
    assert "1 mail(s) back to outgoing" in client.get("/queue/").text
    client.post("/queue/cancel", {"id": str(failed.id)})
    assert OutgoingMail.get_by_id(failed.id).state == "cancel"
    client.post("/queue/retry", {"id": str(failed.id)})
    client.post("/queue/send-now", {"id": str(failed.id)})
    assert OutgoingMail.get_by_id(failed.id).state == "exception"  # the sink still refuses bob@exmaple.com
    assert "mail %d: exception" % failed.id in client.get("/queue/").text
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert f"console: operator ops@example.com: retried mail {failed.id} to bob@exmaple.com" in log
    assert f"canceled mail {failed.id}" in log
    assert "retried mail" in client.get(f"/records/generic/{rec.id}").text  # posted on the record


def test_bulk_retry_puts_every_failed_mail_back(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    chatter.post_message(host, rec, "Second", subject="Again")
    assert OutgoingMail.select().where(OutgoingMail.state == "exception").count() == 2
    client = logged_in(url)
    assert "Retry all 2 failed" in client.get("/queue/").text
    client.post("/queue/retry", {"all_failed": "1"})
    assert OutgoingMail.select().where(OutgoingMail.state == "exception").count() == 0
    assert "2 failed mail(s) back to outgoing" in client.get("/queue/").text


def test_a_refused_action_says_why_instead_of_failing(console, logged_in):
    host, url = console()
    client = logged_in(url)
    client.get("/queue/")
    client.post("/queue/retry", {"id": "424242"})
    assert "Refused: no outgoing mail with id 424242" in client.get("/queue/").text


def test_the_daily_limit_screen_shows_todays_count_and_the_reset(console, logged_in):
    host, url = console(daily_limit=50)
    page = logged_in(url).get("/limit/").text
    assert "<td>50</td>" in page and "2026-01-06 00:00 UTC" in page


def test_follow_and_unfollow_from_the_record_page(console, logged_in):
    host, url = console()
    rec = records.create_record(host, "generic", "Website")
    records.create_partner(host, "Ann", "ann@example.com")
    client = logged_in(url)
    client.get(f"/records/generic/{rec.id}")
    client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"})
    page = client.get(f"/records/generic/{rec.id}").text
    assert "ann@example.com now follows Website" in page
    client.post(f"/records/generic/{rec.id}/unfollow", {"email": "ann@example.com"})
    assert "ann@example.com no longer follows Website" in client.get(f"/records/generic/{rec.id}").text
    client.post(f"/records/generic/{rec.id}/follow", {"email": "nobody@example.com"})
    assert "Refused: " in client.get(f"/records/generic/{rec.id}").text


def test_the_chatter_is_paginated_newest_first(console, logged_in):
    host, url = console()
    rec = records.create_record(host, "generic", "Busy")
    for i in range(60):
        chatter.post_message(host, rec, f"entry number {i:03d}")
    client = logged_in(url)
    first = client.get(f"/records/generic/{rec.id}").text
    assert "entry number 059" in first and "entry number 009" not in first
    assert "page 1 of 2 (60 in all)" in first
    second = client.get(f"/records/generic/{rec.id}?page=2").text
    assert "entry number 009" in second and "entry number 059" not in second


def test_a_messages_attachments_are_listed_and_downloaded(console, logged_in):
    host, url = console()
    rec = records.create_record(host, "generic", "Invoices")
    msg = chatter.post_message(host, rec, "Invoice attached", attachments=[("invoice-42.pdf", b"%PDF-1.4 fake", "application/pdf")])
    client = logged_in(url)
    page = client.get(f"/records/generic/{rec.id}").text
    link = re.search(r'href="(/records/attachment/\d+)">invoice-42.pdf</a>', page)
    assert link, page.split(f'id="message-{msg.id}"')[1][:600]
    resp = client.get(link.group(1))
    assert resp.status == 200 and resp.body == b"%PDF-1.4 fake"
    assert 'filename="invoice-42.pdf"' in resp.headers["content-disposition"]
    assert client.get("/records/attachment/999999").status == 404


def test_the_queue_filters_by_sender(failed_post, logged_in):
    host, url, rec, msg, _ = failed_post
    failed = OutgoingMail.get(OutgoingMail.state == "exception")
    client = logged_in(url)
    assert f'data-mail="{failed.id}"' in client.get("/queue/?sender=admin@example.com").text
    assert f'data-mail="{failed.id}"' not in client.get("/queue/?sender=someone-else").text


def queue_row(page: str, mail_id: int) -> str:
    """The queue table's row of one mail, unescaped."""
    match = re.search(rf'<tr data-mail="{mail_id}">(.*?)</tr>', page, re.S)
    assert match, f"mail {mail_id} is not listed"
    return html.unescape(match.group(1))


def test_the_queue_and_a_mail_page_say_why_a_mail_waits_as_queue_list_does(console, logged_in, cli_run, db_url):
    host, url = console(db_url=db_url, mail_domain_concurrency="slow.example=1",
                        mail_domain_rate="paced.example=1/s", mail_domain_window_seconds=1)
    enqueue = host.service("mail").enqueue
    enqueue([{"email_to": a, "subject": "News", "body_html": "<p>Hi</p>", "bulk": True}
             for a in ("s0@slow.example", "s1@slow.example")])
    claims.claim(host, "busy-worker", 1)  # another worker is sending s0: s1 is held back
    enqueue([{"email_to": a, "subject": "News", "body_html": "<p>Hi</p>", "bulk": True}
             for a in ("p0@paced.example", "p1@paced.example")])
    sending.process_queue(host)  # p0 leaves; p1 waits for the next rate window
    mail = {m.email_to: m.id for m in OutgoingMail.select()}
    listed = {m["email_to"]: m["failure_reason"] for m in json.loads(
        cli_run(host, "queue", "list", "--state", "outgoing", "--json").output)}
    held = ("waiting: 1 mail(s) to slow.example in flight, as many as mail_domain_concurrency "
            "allows (slow.example=1)")
    assert listed["s1@slow.example"] == held
    assert listed["p1@paced.example"].startswith("waiting: pacing paced.example=1/s (mail_domain_rate)")
    client = logged_in(url)

    page = client.get("/queue/?state=outgoing").text

    # Each waiting mail's row gives the reason `queue list` gives, without a failure type.
    assert held in queue_row(page, mail["s1@slow.example"])
    assert listed["p1@paced.example"][:240] in queue_row(page, mail["p1@paced.example"])
    assert "waiting" not in queue_row(page, mail["s0@slow.example"])  # the one in flight
    for address in ("s1@slow.example", "p1@paced.example"):
        details = html.unescape(client.get(f"/queue/{mail[address]}").text)
        assert f'<p class="warning"><span class="reason">{listed[address]}</span></p>' in details
        assert "None:" not in details


def test_a_failed_mail_page_names_its_failure_type(failed_post, logged_in):
    host, url, rec, msg, sink = failed_post
    failed = OutgoingMail.get(OutgoingMail.state == "exception")
    details = html.unescape(logged_in(url).get(f"/queue/{failed.id}").text)
    assert f'<p class="error">mail_smtp: <span class="reason">{failed.failure_reason}</span></p>' in details
    assert f"mail_smtp: {failed.failure_reason[:160]}" in queue_row(
        logged_in(url).get("/queue/").text, failed.id)
