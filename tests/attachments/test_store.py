"""The core attachment store: content stored once per checksum, crash-safe files, exact
bytes back, bad input refused before anything is written, unreferenced content vacuumed."""
import datetime as dt
import hashlib
import json
import os

import pytest

from postroom.core import attachments, chatter, records
from postroom.core.models import Attachment, AttachmentContent, Message, Record

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def host(make_host, db_url):
    return make_host(db_url=db_url)


def store_files(host):
    root = attachments.store_dir(host)
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def test_same_content_attached_twice_is_stored_once_under_its_checksum(host, tmp_path):
    rec = records.create_record(host, "generic", "Order 42")
    path = tmp_path / "quote.pdf"
    path.write_bytes(PDF)
    first = chatter.post_message(host, rec, "quote", attachments=[path])
    second = chatter.post_message(host, rec, "again", attachments=[("copy.pdf", PDF, "application/pdf")])

    rows = attachments.of("message", first.id) + attachments.of("message", second.id)
    checksum = hashlib.sha256(PDF).hexdigest()
    assert [(a.name, a.mimetype, a.size, a.checksum) for a in rows] == [
        ("quote.pdf", "application/pdf", len(PDF), checksum),
        ("copy.pdf", "application/pdf", len(PDF), checksum)]
    assert store_files(host) == [os.path.join(attachments.store_dir(host), checksum[:2], checksum)]
    assert AttachmentContent.select().count() == 1
    assert attachments.content(host, rows[1]) == PDF


def test_a_content_file_removed_by_hand_is_written_again_by_the_next_store(host):
    rec = records.create_record(host, "generic", "Order 42")
    msg = chatter.post_message(host, rec, "x", attachments=[("a.bin", b"abc", None)])
    row = attachments.of("message", msg.id)[0]
    os.unlink(attachments.path_of(host, row.checksum))
    chatter.post_message(host, rec, "y", attachments=[("b.bin", b"abc", None)])
    assert attachments.content(host, row) == b"abc"
    assert not [f for f in store_files(host) if os.path.basename(f).startswith(".tmp-")]


def test_a_failed_post_leaves_no_attachment_row(host):
    rec = records.create_record(host, "generic", "Order 42")
    with pytest.raises(Exception):
        with host.transaction():
            chatter.post_message(host, rec, "x", attachments=[("a.txt", b"hello", "text/plain")])
            raise RuntimeError("the caller's transaction fails after the post")
    assert Attachment.select().count() == 0 and AttachmentContent.select().count() == 0


def test_cli_posts_with_several_files_lists_them_and_exports_exact_bytes(host, cli_run, tmp_path):
    rec = records.create_record(host, "generic", "Order 42")
    pdf = tmp_path / "Facture n°42 — été.pdf"
    pdf.write_bytes(PDF)
    png = tmp_path / "logo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))

    result = cli_run(host, "message", "post", "generic", rec.id, "--body", "your invoice",
                     "--attach", pdf, "--attach", png)
    assert result.exit_code == 0, result.output
    mid = int(result.output.split()[-1])

    shown = cli_run(host, "message", "show", mid, "--json")
    files = json.loads(shown.output)["attachments"]
    assert [(f["name"], f["mimetype"], f["size"]) for f in files] == [
        ("Facture n°42 — été.pdf", "application/pdf", len(PDF)),
        ("logo.png", "image/png", png.stat().st_size)]
    assert "Facture n°42 — été.pdf" in cli_run(host, "message", "show", mid).output

    out = tmp_path / "out"
    out.mkdir()
    exported = cli_run(host, "attachment", "export", files[0]["id"], "--output", out)
    assert exported.exit_code == 0, exported.output
    assert (out / "Facture n°42 — été.pdf").read_bytes() == PDF


@pytest.mark.parametrize("make_bad,says", [
    (lambda d: d / "missing.pdf", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "big.bin").write_bytes(b"x" * 2049) and d / "big.bin", "larger than attachment_max_size"),
])
def test_bad_attachment_is_one_clear_line_and_nothing_is_posted(make_host, cli_run, tmp_path, make_bad, says):
    host = make_host(config={"attachment_max_size": "2048"})
    rec = records.create_record(host, "generic", "Order 42")
    good = tmp_path / "ok.txt"
    good.write_text("fine")
    folder = tmp_path / "in"
    folder.mkdir()
    result = cli_run(host, "message", "post", "generic", rec.id, "--body", "x",
                     "--attach", good, "--attach", make_bad(folder))
    assert result.exit_code != 0
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert Message.select().count() == 0 and Attachment.select().count() == 0
    assert store_files(host) == []


def test_export_of_unknown_attachment_is_refused(host, cli_run):
    result = cli_run(host, "attachment", "export", "999")
    assert result.exit_code == 3 and "no attachment with id 999" in result.stderr


def test_vacuum_removes_unreferenced_content_in_chunks_and_keeps_the_rest(make_host, db_url, clock, cli_run):
    host = make_host(plugins=["auto_vacuum"], db_url=db_url, config={"vacuum_batch_size": "1"})
    kept_rec = records.create_record(host, "generic", "kept")
    gone_rec = records.create_record(host, "generic", "deleted")
    kept = chatter.post_message(host, kept_rec, "x", attachments=[("keep.txt", b"keep me", None)])
    chatter.post_message(host, gone_rec, "y", attachments=[("a.txt", b"first", None),
                                                           ("b.txt", b"second", None)])
    shared = chatter.post_message(host, gone_rec, "z", attachments=[("k2.txt", b"keep me", None)])
    assert len(store_files(host)) == 3
    Record.delete().where(Record.id == gone_rec.id).execute()  # its chatter goes with it

    # Within the grace period nothing goes: a writer may be about to reference it.
    result = json.loads(cli_run(host, "vacuum", "--json").output)
    core = next(e for e in result["plugins"] if e["plugin"] == "core")
    assert core["removed"]["attachments"] == 3 and core["removed"]["attachment_content"] == 0
    assert len(store_files(host)) == 3

    clock.advance(dt.timedelta(hours=2))
    result = json.loads(cli_run(host, "vacuum", "--json").output)
    core = next(e for e in result["plugins"] if e["plugin"] == "core")
    assert core["removed"]["attachment_content"] == 2 and core["chunks"] >= 2
    row = attachments.of("message", kept.id)[0]
    assert store_files(host) == [attachments.path_of(host, row.checksum)]
    assert attachments.content(host, row) == b"keep me"
    assert attachments.of("message", shared.id) == []
