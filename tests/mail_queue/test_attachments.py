"""Outgoing attachments, checked by parsing what a real SMTP sink received: the parts, their
Content-Type / Content-Disposition, RFC 2231 names, exact bytes; built once per message."""
import datetime as dt
import json
import os

from postroom.core import attachments, chatter
from postroom.core.models import Attachment, AttachmentContent
from postroom.plugins.mail_queue import compose
from postroom.plugins.mail_queue.models import OutgoingMail

from .conftest import record_with_followers

PDF = b"%PDF-1.4\n" + os.urandom(3000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(400)
NAME = "Facture n°42 — été.pdf"


def files_of(received):
    return [(p.get_filename(), p.get_content_type(), p.get_content_disposition(), p.get_content())
            for p in received.message.iter_attachments()]


def test_each_follower_gets_the_post_attachments_with_rfc2231_names(mail_host, sink, db_url):
    host = mail_host(db_url=db_url)
    rec, _ = record_with_followers(host, "ann@example.org", "bob@example.org")
    msg = chatter.post_message(host, rec, "Your invoice", subject="Invoice 42",
                               attachments=[(NAME, PDF, "application/pdf"), ("notes.txt", b"line\n", None)])
    got = sink.wait_for(2)
    assert len(got) == 2
    for r in got:
        assert files_of(r) == [(NAME, "application/pdf", "attachment", PDF),
                               ("notes.txt", "text/plain", "attachment", "line\n")]
        assert "Your invoice" in r.message.get_body(("plain",)).get_content()
        assert r.message.get_content_type() == "multipart/mixed"
        raw = r.data.decode("ascii")  # the wire stays 7-bit: the name is RFC 2231-encoded
        assert "filename*=utf-8''Facture%20n%C2%B042%20%E2%80%94%20%C3%A9t%C3%A9.pdf" in raw
    assert [a.name for a in attachments.of("message", msg.id)] == [NAME, "notes.txt"]


def test_an_inline_image_travels_as_a_related_part_with_its_content_id(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "ann@example.org")
    chatter.post_message(host, rec, '<p>Logo: <img src="cid:logo@ex"></p>', body_is_html=True,
                         attachments=[("logo.png", PNG, "image/png", "logo@ex")])
    [r] = sink.wait_for(1)
    [inline] = [p for p in r.message.walk() if p.get("Content-ID")]
    assert inline["Content-ID"] == "<logo@ex>"
    assert (inline.get_content_type(), inline.get_content_disposition(), inline.get_content()) == (
        "image/png", "inline", PNG)
    assert any(p.get_content_type() == "multipart/related" for p in r.message.walk())


def test_the_mime_body_with_files_is_built_once_for_all_recipients(mail_host, sink):
    host = mail_host(mail_force_send_limit=0)
    rec, _ = record_with_followers(host, *[f"p{i}@example.org" for i in range(6)])
    chatter.post_message(host, rec, f"Price list {os.urandom(4).hex()}", attachments=[("prices.pdf", PDF, None)])
    before = compose.stats["bodies_with_files_built"]
    host.service("mail").process_queue()
    got = sink.wait_for(6)
    assert len(got) == 6 and all(files_of(r)[0][3] == PDF for r in got)
    assert compose.stats["bodies_with_files_built"] - before == 1


def test_mail_send_attaches_files_and_the_export_carries_them(mail_host, sink, cli_run, tmp_path):
    host = mail_host()
    pdf = tmp_path / NAME
    pdf.write_bytes(PDF)
    result = cli_run(host, "mail", "send", "--to", "Ann <ann@example.org>", "--to", "bob@example.org",
                     "--subject", "Quote", "--body", "attached", "--attach", pdf)
    assert result.exit_code == 0, result.output
    got = sink.wait_for(2)
    assert [files_of(r) for r in got] == [[(NAME, "application/pdf", "attachment", PDF)]] * 2
    assert AttachmentContent.select().count() == 1  # two mails, one stored copy
    mail_id = result.output.split()[-1]
    exported = cli_run(host, "queue", "export", mail_id)
    import email
    import email.policy
    eml = email.message_from_bytes(exported.stdout_bytes, policy=email.policy.default)
    assert [p.get_content() for p in eml.iter_attachments()] == [PDF]


def test_mail_send_with_a_missing_file_sends_nothing(mail_host, sink, cli_run, tmp_path):
    host = mail_host()
    result = cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Quote",
                     "--body", "x", "--attach", tmp_path / "nope.pdf")
    assert result.exit_code != 0 and "no such file" in result.stderr
    assert OutgoingMail.select().count() == 0 and sink.received() == []


def test_vacuum_keeps_content_of_a_queued_mail_and_removes_that_of_a_sent_one(
        mail_host, smtp_sink, cli_run, tmp_path, clock, db_url):
    down = smtp_sink(data_reply="451 4.3.0 try later")
    host = mail_host(db_url=db_url, plugins=("mail_queue", "auto_vacuum"),
                     smtp_port=down.port)
    queued = tmp_path / "queued.pdf"
    queued.write_bytes(PDF)
    sent = tmp_path / "sent.txt"
    sent.write_bytes(b"delivered and gone")
    assert cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "A", "--body", "x",
                   "--attach", queued).exit_code == 0  # deferred: the server says 4xx
    up = smtp_sink()
    host2 = mail_host(db_url=db_url, plugins=("mail_queue", "auto_vacuum"), smtp_port=up.port)
    assert cli_run(host2, "mail", "send", "--auto-delete", "--to", "bob@example.org", "--subject", "B",
                   "--body", "y", "--attach", sent).exit_code == 0
    assert len(up.wait_for(1)) == 1
    clock.advance(dt.timedelta(hours=2))
    report = json.loads(cli_run(host2, "vacuum", "--json").output)
    removed = {e["plugin"]: e["removed"] for e in report["plugins"]}
    assert removed["mail_queue"]["attachments"] == 1
    assert removed["core"]["attachment_content"] == 1
    [left] = Attachment.select()
    assert attachments.content(host2, left) == PDF
    assert OutgoingMail.get(OutgoingMail.id == left.res_id).state == "outgoing"
