"""The "mail" service contract other plugins build on, and the queue action."""
import collections
import datetime as dt
import email
import email.policy

import pytest

from postroom.core import scheduler, tokens
from postroom.core.errors import InvalidInput
from postroom.core.models import CronAction
from postroom.plugins.mail_queue import compose, sending

from .conftest import MailRecorder, mails


def test_the_plugin_provides_the_email_queue_manager_every_60_minutes(mail_host):
    host = mail_host()
    action = CronAction.get(CronAction.code == "mail_queue.process")
    assert action.name == "Mail: Email Queue Manager"
    assert (action.interval_number, action.interval_type) == (60, "minutes")


def test_the_action_sends_due_bulk_mail_and_reports_progress(mail_host, sink):
    host = mail_host()
    host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(3)])
    [result] = scheduler.run_due(host)
    assert result["name"] == "Mail: Email Queue Manager" and result["error"] is None
    assert (result["done"], result["remaining"]) == (3, 0)
    assert len(sink.wait_for(3)) == 3


def test_enqueue_joins_the_callers_transaction(mail_host, sink, db_url):
    host = mail_host(db_url=db_url)
    service = host.service("mail")
    with pytest.raises(RuntimeError):
        with host.transaction():
            service.enqueue([{"email_to": "a@example.org", "subject": "S", "bulk": False}])
            raise RuntimeError
    assert mails() == [] and sink.received() == []
    ids = service.enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(1200)])
    assert ids == [m.id for m in mails()] and len(ids) == 1200


def test_enqueue_is_set_based(mail_host):
    host = mail_host()
    service = host.service("mail")
    counts = []
    for n in (10, 400):
        before = host.statements()
        service.enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(n)])
        counts.append(host.statements() - before)
    assert counts[0] == counts[1]


def test_a_drain_writes_each_outcome_with_a_fixed_number_of_statements(mail_host, sink):
    # Each mail's outcome is durable right after the server's answer (so a crash repeats
    # at most the mail in flight): a few statements per mail, never more per mail in a
    # bigger batch, and the claim and the batch's own work stay one set each.
    host = mail_host(mail_batch_size=500, daily_limit=100000)
    counts = []
    for n in (1, 1, 20, 400):  # the first runs warm caches (the signing secret)
        host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": "S"} for i in range(n)])
        before = host.statements()
        sending.process_queue(host)
        counts.append(host.statements() - before)
    per_mail = (counts[3] - counts[2]) / 380
    assert per_mail == int(per_mail) and per_mail <= 2, counts
    assert counts[3] - 400 * per_mail == counts[2] - 20 * per_mail <= 20, counts  # the batch's own


def test_ref_signs_the_bounce_address_and_comes_back_in_the_hooks(mail_host, smtp_sink):
    recorder = MailRecorder()
    host = mail_host(extra=[recorder])
    host.service("mail").enqueue([
        {"email_to": "a@example.org", "subject": "S", "ref": "mt12",
         "headers": {"List-Unsubscribe": "<https://example.com/u/1>", "Precedence": "bulk"}},
        {"email_to": "b@example", "subject": "S", "ref": "mt13"}])
    host.service("mail").process_queue()
    [sent] = recorder.sent
    assert sent["ref"] == "mt12" and sent["email_to"] == "a@example.org" and sent["mail_id"]
    [failed] = recorder.failed
    assert (failed["ref"], failed["failure_type"], failed["permanent"]) == ("mt13", "mail_email_invalid", True)


def test_headers_and_bounce_address_on_the_wire(mail_host, sink):
    host = mail_host()
    host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "S", "ref": "mt12",
                                   "message_id": "<abc@example.com>",
                                   "headers": {"List-Unsubscribe": "<https://example.com/u/1>"}}])
    host.service("mail").process_queue()
    [r] = sink.received()
    assert tokens.bounce_value(host, r.mail_from) == "mt12"
    assert r.message["List-Unsubscribe"] == "<https://example.com/u/1>"
    assert r.message_id == "<abc@example.com>"


@pytest.mark.parametrize("mail", [
    {"email_to": "a@example.org\r\nBcc: x@example.net"},
    {"email_to": "a@example.org", "subject": "a\nb"},
    {"email_to": "a@example.org", "email_from": "Eve <e@example.org>\r\nBcc: x@example.net"},
    {"email_to": "a@example.org", "headers": {"X-Evil": "a\r\nBcc: x@example.net"}},
    # Not a plain dict (an application's OrderedDict): its values are checked all the same.
    {"email_to": "a@example.org", "headers": collections.OrderedDict({"X-Evil": "a\r\nBcc: x@example.net"})},
    {"email_to": "a@example.org", "headers": {"Bcc": "x@example.net"}},
    {"email_to": "a@example.org", "headers": {"Bad Name": "x"}},
    {"email_to": "a@example.org", "ref": "mt-1"},
    {"email_to": "a@example.org", "scheduled_at": dt.datetime(2026, 1, 1)},
    {"email_to": "a@example.org", "message_id": "no-brackets"},
    {"email_to": "a@example.org", "colour": "red"},
    {"email_to": "a@example.org, b@example.org"},
])
def test_header_injection_and_bad_keys_are_refused_and_nothing_is_written(mail_host, mail):
    host = mail_host()
    with pytest.raises(InvalidInput):
        host.service("mail").enqueue([{"email_to": "ok@example.org"}, mail])
    assert mails() == []


def test_trigger_queue_asks_for_an_earlier_run(mail_host, clock):
    host = mail_host()
    host.service("mail").trigger_queue(clock.now() + dt.timedelta(minutes=7))
    assert scheduler.listing(host)[0]["trigger_at"] == (clock.now() + dt.timedelta(minutes=7)).isoformat()


def test_built_messages_parse_back_with_the_email_package():
    class Mail:
        email_from = "Åsa Öberg <asa@example.com>"
        email_to = "zoe@example.org"
        recipient_name = "Zoë, \"the\" Ünïcode"
        subject = "Réunion — " + "très long sujet " * 80
        message_id = "<x.1@example.com>"
        in_reply_to = "<p@example.com>"
        references = "<p@example.com>"
        headers = {"X-Note": "café"}
        body_html = "<p>Bonjour <b>Zoë</b></p><p>" + "ligne " * 300 + "</p>"
    data = compose.build(Mail, "bounce+n1-abc@example.com", "Mon, 05 Jan 2026 09:00:00 +0000",
                         "catchall@example.com")
    assert data.isascii() and all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Subject"] == Mail.subject
    assert msg["To"].addresses[0].display_name == Mail.recipient_name
    assert msg["From"].addresses[0].display_name == "Åsa Öberg"
    assert msg["X-Note"] == "café"
    assert msg["Reply-To"] == "catchall@example.com"
    assert msg.get_body(("html",)).get_content().strip() == Mail.body_html
    assert "Bonjour Zoë" in msg.get_body(("plain",)).get_content()
    assert not msg.defects and all(not p.defects for p in msg.walk())


def test_ascii_parts_go_as_7bit_the_others_quoted_printable_and_all_parse_back():
    long_line = "<p>" + "word " * 300 + "</p>"  # over 998 characters on one line
    cases = [("<p>Plain ASCII, " + "news " * 150 + "</p>", "7bit"),  # 750 characters: allowed
             ("<p>Bonjour Zoë</p>", "quoted-printable"), (long_line, "quoted-printable"),
             ("<p>nul \x00 here</p>", "quoted-printable")]
    for html, cte in cases:
        data = compose.body_part(html, None)
        assert all(len(line) <= 998 for line in data.split(b"\r\n"))
        msg = email.message_from_bytes(b"From: a@example.com\r\n" + data, policy=email.policy.default)
        part = msg.get_body(("html",))
        assert part["Content-Transfer-Encoding"] == cte
        assert part.get_content().rstrip("\n") == html
        assert not msg.defects and all(not p.defects for p in msg.walk())


def test_a_7bit_body_with_lines_of_dots_arrives_intact_over_smtp(mail_host, sink):
    host = mail_host()
    html = "<pre>\n.\n..two\n.three\n</pre>"  # SMTP's end-of-data line, and dot-stuffing
    host.service("mail").enqueue([{"email_to": "ann@example.org", "subject": "dots", "body_html": html}])
    host.service("mail").process_queue()
    [r] = sink.wait_for(1)
    part = r.message.get_body(("html",))
    assert part["Content-Transfer-Encoding"] == "7bit"
    # Lines travel in their canonical CRLF form, which email's parser keeps for 7bit parts.
    assert part.get_content().replace("\r\n", "\n").rstrip("\n") == html


def test_mail_prepare_hooks_get_an_email_message_to_add_headers(mail_host, sink):
    from postroom.core.plugins import hookimpl

    class Signer:
        @hookimpl(optionalhook=True)
        def postroom_mail_prepare(self, host, mail, message):
            message["X-Signed-For"] = mail.email_to

    host = mail_host(extra=[Signer()])
    host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "Ünï", "bulk": False}])
    [got] = sink.wait_for(1)
    assert got.message["X-Signed-For"] == "a@example.org" and got.message["Subject"] == "Ünï"


def test_send_now_inside_a_transaction_waits_for_the_commit(mail_host, sink):
    host = mail_host()
    [mail_id] = host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "S"}])
    with host.transaction():
        host.service("mail").send_now([mail_id])
        assert sink.received() == []
    assert len(sink.wait_for(1)) == 1
    with pytest.raises(Exception, match="inside a transaction"):
        with host.transaction():
            host.service("mail").process_queue()


def test_every_scheduled_time_gets_its_trigger(mail_host, clock):
    from postroom.core.models import CronTrigger
    host = mail_host()
    times = [clock.now() + dt.timedelta(minutes=m) for m in (10, 20, 10)]
    host.service("mail").enqueue([{"email_to": "a@example.org", "scheduled_at": t} for t in times])
    assert sorted(t.call_at for t in CronTrigger.select()) == sorted(set(times))


def test_lines_starting_with_a_dot_arrive_intact(mail_host, sink):
    host = mail_host()
    body = "<pre>\n.\n..leading dots\n.end\n</pre>"
    host.service("mail").enqueue([{"email_to": "a@example.org", "subject": "S", "body_html": body}])
    host.service("mail").process_queue()
    [got] = sink.wait_for(1)
    assert got.message.get_body(("html",)).get_content().replace("\r\n", "\n").strip() == body


def test_the_published_service_keeps_the_core_contract(mail_host):
    """What mail_marketing and third parties code against is core.services.MailService:
    the service mail_queue publishes has every method with the contract's arguments, and
    names its deployment-side failure types with a remedy each."""
    import inspect

    from postroom.core import services
    host = mail_host()
    service = services.mail(host)
    assert isinstance(service, services.MailService)
    for name in ("enqueue", "trigger_queue", "process_queue", "send_now"):
        contract = inspect.signature(getattr(services.MailService, name))
        provided = inspect.signature(getattr(type(service), name))
        assert list(provided.parameters) == list(contract.parameters), name
    assert {"mail_smtp", "mail_limit"} <= set(service.deployment_failures)
    assert all(remedy.strip() for remedy in service.deployment_failures.values())


@pytest.mark.parametrize("data", [
    b".leading\r\nmiddle\r\n.\r\n..two\r\n.three\r\nlast.\r\n", b"no dots at all\r\n", b".", b"", b"\n.\n.\r\n.",
    b"a.b\r\n . not first\r\n\r\n.\r\n",
])
def test_dot_stuffing_adds_a_dot_before_each_line_s_leading_dot_and_nothing_else(data):
    import re

    from postroom.plugins.mail_queue import smtp_client
    assert smtp_client.dot_stuffed(data) == re.sub(rb"(?m)^\.", b"..", data)
