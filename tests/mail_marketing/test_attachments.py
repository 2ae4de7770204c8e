"""Campaign attachments: every recipient's mail carries them, stored once."""
import os

from postroom.core.models import AttachmentContent
from postroom.plugins.mail_marketing.models import Campaign

from .conftest import contacts, drain, last_word, make_list, show

PDF = b"%PDF-1.4\n" + os.urandom(2000) + b"\n%%EOF\n"


def test_every_recipient_gets_the_campaign_attachment_stored_once(mk, run, sink, tmp_path, db_url):
    host = mk(db_url=db_url)
    make_list(run, host, tmp_path, "news", contacts(3))
    body = tmp_path / "body.html"
    body.write_text("<p>Our catalogue</p>", encoding="utf-8")
    pdf = tmp_path / "Catalogue 2026 — prix.pdf"
    pdf.write_bytes(PDF)
    cid = last_word(run(host, "campaign", "create", "--subject", "Catalogue", "--body-file", body,
                        "--list", "news", "--attach", pdf))
    assert [a["name"] for a in show(run, host, cid)["attachments"]] == ["Catalogue 2026 — prix.pdf"]
    run(host, "campaign", "send", cid)
    drain(host)
    got = sink.wait_for(3)
    assert len(got) == 3
    for r in got:
        [part] = list(r.message.iter_attachments())
        assert (part.get_filename(), part.get_content_type(), part.get_content()) == (
            "Catalogue 2026 — prix.pdf", "application/pdf", PDF)
    assert AttachmentContent.select().count() == 1


def test_campaign_create_with_a_missing_file_creates_nothing(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(1))
    body = tmp_path / "body.html"
    body.write_text("<p>x</p>", encoding="utf-8")
    result = run(host, "campaign", "create", "--subject", "C", "--body-file", body, "--list", "news",
                 "--attach", tmp_path / "gone.pdf", expect_fail=True)
    assert "no such file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert Campaign.select().count() == 0


def test_campaign_mail_is_addressed_to_the_contact_by_name_from_the_campaign_sender(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann Smith", "jose@example.org,José Núñez"])
    body = tmp_path / "body.html"
    body.write_text("<p>News</p>", encoding="utf-8")
    cid = last_word(run(host, "campaign", "create", "--subject", "News", "--body-file", body,
                        "--list", "news", "--from", "Boutique Élise <news@example.com>"))
    run(host, "campaign", "send", cid)
    drain(host)
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(2)}
    assert {a: (m["To"].addresses[0].display_name, m["To"].addresses[0].addr_spec) for a, m in got.items()} == {
        "ann@example.org": ("Ann Smith", "ann@example.org"),
        "jose@example.org": ("José Núñez", "jose@example.org")}
    for m in got.values():
        assert m["From"].addresses[0].display_name == "Boutique Élise"


def test_a_personalised_campaign_encodes_its_attachment_once_for_all_recipients(mk, run, sink, tmp_path, db_url):
    from postroom.plugins.mail_queue import compose
    host = mk(db_url=db_url)
    make_list(run, host, tmp_path, "news", contacts(4))
    body = tmp_path / "body.html"
    body.write_text("<p>Dear {{ contact.name }}, our catalogue</p>", encoding="utf-8")
    pdf = tmp_path / "Catalogue — prix.pdf"
    content = PDF + os.urandom(8)  # a file this process has not encoded yet
    pdf.write_bytes(content)
    cid = last_word(run(host, "campaign", "create", "--subject", "For {{ contact.name }}", "--body-file", body,
                        "--list", "news", "--attach", pdf))
    run(host, "campaign", "send", cid)
    encoded, bodies = compose.stats["file_parts_encoded"], compose.stats["bodies_with_files_built"]
    drain(host)
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(4)}
    assert compose.stats["file_parts_encoded"] - encoded == 1  # one file, encoded once
    assert compose.stats["bodies_with_files_built"] - bodies == 4  # a body per recipient
    for i in range(4):
        message = got[f"user{i}@example.org"]
        assert message["Subject"] == f"For User {i}"
        assert f"Dear User {i}, our catalogue" in message.get_body(("html",)).get_content()
        [part] = list(message.iter_attachments())
        assert (part.get_filename(), part.get_content()) == ("Catalogue — prix.pdf", content)
        assert not message.defects and all(not p.defects for p in message.walk())
