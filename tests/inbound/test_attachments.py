"""Attachments of inbound mail arrive through the real gateway and are stored with the
posted message: names (RFC 2231 and RFC 2047), exact bytes, inline images with Content-ID."""
import json
import os
from email.message import EmailMessage
from email.policy import SMTP

from postroom.core import attachments, chatter, records
from postroom.core.models import Message, Record
from postroom.plugins.inbound import aliases

from .conftest import transaction

PDF = b"%PDF-1.4\n" + os.urandom(5000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(700)


def mail_with_files(**headers) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Ann <ann@client.test>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Invoice question"
    msg["Message-Id"] = "<att1@client.test>"
    for k, v in headers.items():
        msg[k] = v
    msg.set_content("See the attached invoice.")
    msg.add_alternative('<p>See the invoice. <img src="cid:logo123@client.test"></p>', subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo123@client.test>",
                                     filename="logo.png")
    msg.add_attachment(PDF, "application", "pdf", filename="Facture n°42 — été.pdf")
    return msg.as_bytes()


def test_alias_mail_attachments_are_stored_with_the_new_record_message(inbound_host, gateway, db_url, cli_run,
                                                                       tmp_path):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    code, _ = transaction(gateway(host), "ann@client.test", ["support@example.com"], mail_with_files())[1]
    assert code == 250
    first = chatter.chatter(Record.get(Record.name == "Invoice question"))[0]
    shown = json.loads(cli_run(host, "message", "show", first.id, "--json").output)
    files = {f["name"]: f for f in shown["attachments"]}
    assert set(files) == {"logo.png", "Facture n°42 — été.pdf"}
    assert files["logo.png"]["content_id"] == "logo123@client.test"
    assert files["logo.png"]["mimetype"] == "image/png"
    assert files["Facture n°42 — été.pdf"]["mimetype"] == "application/pdf"
    out = tmp_path / "invoice.pdf"
    assert cli_run(host, "attachment", "export", files["Facture n°42 — été.pdf"]["id"],
                   "-o", out).exit_code == 0
    assert out.read_bytes() == PDF
    assert attachments.content(host, attachments.get(host, files["logo.png"]["id"])) == PNG
    assert "See the invoice." in first.body


def test_reply_attachment_with_an_rfc2047_name_is_stored_on_the_reply(inbound_host, gateway):
    host = inbound_host()
    record = records.create_record(host, "generic", "Order 42")
    sent = chatter.post_message(host, record, "Your quote", subject="Order 42")
    raw = (f"From: ann@client.test\r\nTo: catchall@example.com\r\nSubject: Re: Order 42\r\n"
           f"Message-Id: <r9@client.test>\r\nIn-Reply-To: {sent.message_id}\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
           f"signed copy attached\r\n--XX\r\nContent-Type: application/pdf; name=\"=?utf-8?q?sign=C3=A9.pdf?=\"\r\n"
           f"Content-Disposition: attachment; filename=\"=?utf-8?q?sign=C3=A9.pdf?=\"\r\n"
           f"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n").encode()
    code, _ = transaction(gateway(host), "ann@client.test", ["catchall@example.com"], raw)[1]
    assert code == 250
    reply = Message.get(Message.message_id == "<r9@client.test>")
    [pdf] = attachments.of("message", reply.id)
    assert (pdf.name, pdf.mimetype, attachments.content(host, pdf)) == ("signé.pdf", "application/pdf",
                                                                          b"%PDF-1.4\n")


def test_an_inbound_part_over_attachment_max_size_is_dropped_but_the_mail_is_posted(inbound_host, gateway):
    host = inbound_host(attachment_max_size=1000)
    aliases.add_alias(host, "support", "generic")
    code, _ = transaction(gateway(host), "ann@client.test", ["support@example.com"], mail_with_files())[1]
    assert code == 250
    first = chatter.chatter(Record.get(Record.name == "Invoice question"))[0]
    assert [a.name for a in attachments.of("message", first.id)] == ["logo.png"]
