"""Named templates, notification layouts and `mail send --template`, through the real CLI
and a real SMTP sink."""
import json

import pytest

from postroom.core import chatter, records
from postroom.core.models import Template
from tests.support.smtp import SMTPSink


@pytest.fixture
def sink():
    with SMTPSink() as server:
        yield server


@pytest.fixture
def host(make_host, sink):
    h = make_host(plugins=["mail_queue"], config={"smtp_host": sink.host, "smtp_port": sink.port})
    records.ensure_admin(h, "admin@example.com")
    return h


def test_notifications_carry_the_default_layout_naming_the_record(host, sink):
    rec = records.create_record(host, "generic", "Order 42")
    records.follow(host, rec, records.create_partner(host, "Ann", "ann@example.org"))
    chatter.post_message(host, rec, "Your order shipped", subject="Order 42")
    [r] = sink.wait_for(1)
    text = r.message.get_body(("plain",)).get_content()
    assert "Your order shipped" in text
    assert "You receive this because you follow Order 42." in " ".join(text.split())
    assert "removed" in text  # how to stop


def test_a_layout_set_per_record_type_replaces_the_default_and_preview_shows_it(host, sink, cli_run, tmp_path):
    layout = tmp_path / "layout.html"
    layout.write_text("<div class=brand>ACME</div>{{ body }}<p>About {{ record.name }} "
                      "({{ record.model }} {{ record.id }})</p>", encoding="utf-8")
    result = cli_run(host, "template", "set-layout", "generic", layout)
    assert result.exit_code == 0, result.output
    rec = records.create_record(host, "generic", "Order 42")
    records.follow(host, rec, records.create_partner(host, "Ann", "ann@example.org"))
    msg = chatter.post_message(host, rec, "Shipped <today>", subject="Order 42")
    [r] = sink.wait_for(1)
    html = r.message.get_body(("html",)).get_content()
    assert '<div class=brand>ACME</div><p>Shipped &lt;today&gt;</p><p>About Order 42 (generic 1)</p>' in html
    preview = cli_run(host, "message", "preview", msg.id)
    assert preview.exit_code == 0 and "ACME" in preview.output and "About Order 42" in preview.output
    assert cli_run(host, "template", "set-layout", "generic", "--reset").exit_code == 0
    assert "You receive this because" in cli_run(host, "message", "preview", msg.id).output


@pytest.mark.parametrize("source,says", [
    ("{{ body }}{% if %}", "line 1"),
    ("{{ body }}{{ partner.name }}", "unknown variable 'partner'"),
])
def test_a_layout_that_does_not_compile_is_refused_when_set(host, cli_run, tmp_path, source, says):
    layout = tmp_path / "bad.html"
    layout.write_text(source, encoding="utf-8")
    result = cli_run(host, "template", "set-layout", "generic", layout)
    assert result.exit_code != 0 and says in result.stderr
    assert Template.select().count() == 0


def test_named_template_add_list_show_preview_remove(host, cli_run, tmp_path):
    body = tmp_path / "invoice.html"
    body.write_text("<p>Dear {{ recipient.name }}, invoice {{ number }} is attached.</p>", encoding="utf-8")
    assert cli_run(host, "template", "add", "invoice", "--subject", "Invoice {{ number }}",
                   "--body-file", body).exit_code == 0
    listed = json.loads(cli_run(host, "template", "list", "--json").output)
    assert [(t["kind"], t["name"], t["subject"]) for t in listed] == [("mail", "invoice", "Invoice {{ number }}")]
    assert "invoice {{ number }} is attached" in cli_run(host, "template", "show", "invoice").output
    preview = cli_run(host, "template", "preview", "invoice", "--var", "number=42")
    assert preview.exit_code == 0 and "Subject: Invoice 42" in preview.output
    assert "Dear Ann Example, invoice 42 is attached." in preview.output
    bad = cli_run(host, "template", "preview", "invoice", "--var", "numbr=42")
    assert bad.exit_code != 0 and "unknown variable" in bad.stderr
    assert cli_run(host, "template", "remove", "invoice").exit_code == 0
    assert cli_run(host, "template", "show", "invoice").exit_code == 3


def test_template_add_refuses_a_template_that_does_not_compile(host, cli_run, tmp_path):
    body = tmp_path / "b.html"
    body.write_text("line 1\n{% for x in %}", encoding="utf-8")
    result = cli_run(host, "template", "add", "t", "--subject", "S", "--body-file", body)
    assert result.exit_code != 0 and "line 2" in result.stderr
    assert Template.select().count() == 0


def test_mail_send_with_a_template_renders_it_per_recipient(host, sink, cli_run, tmp_path):
    body = tmp_path / "invoice.html"
    body.write_text("<p>Dear {{ recipient.name }}, invoice {{ number }}.</p>", encoding="utf-8")
    cli_run(host, "template", "add", "invoice", "--subject", "Invoice {{ number }}", "--body-file", body)
    result = cli_run(host, "mail", "send", "--to", "Ann Smith <ann@example.org>", "--to", "Bob <bob@example.org>",
                     "--template", "invoice", "--var", "number=F-042")
    assert result.exit_code == 0, result.output
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(2)}
    assert got["ann@example.org"]["Subject"] == "Invoice F-042"
    assert "Dear Ann Smith, invoice F-042." in got["ann@example.org"].get_body(("plain",)).get_content()
    assert "Dear Bob, invoice F-042." in got["bob@example.org"].get_body(("plain",)).get_content()
    missing = cli_run(host, "mail", "send", "--to", "ann@example.org", "--template", "invoice")
    assert missing.exit_code != 0 and "unknown variable 'number'" in missing.stderr
