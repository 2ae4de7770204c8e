"""postroom.post_message(..., attachments=[...]): paths and (name, bytes, mimetype)."""
import os
import pathlib
import shutil
import tempfile

import pytest

import postroom
from postroom.core.models import Message
from tests.support.smtp import SMTPSink


@pytest.fixture
def sink():
    with SMTPSink() as server:
        yield server


@pytest.fixture
def app(tmp_path, sink, clock):
    with postroom.open_host({"database": f"sqlite:///{tmp_path / 'app.db'}", "domains": "example.com",
                             "log_dir": str(tmp_path / "logs"), "data_dir": str(tmp_path / "data"),
                             "smtp_host": sink.host, "smtp_port": sink.port,
                             "mail_from": "shop@example.com"}, clock=clock) as host:
        host.enable_plugin("mail_queue")
        yield host


def test_post_message_attaches_paths_and_bytes_and_every_mail_carries_them(app, sink, tmp_path):
    quote = tmp_path / "Devis n°7.pdf"
    quote.write_bytes(b"%PDF-1.4 quote")
    order = postroom.create_record(app, "generic", "Order 7")
    postroom.create_partner(app, "Ann", "ann@example.org")
    postroom.follow(app, order, "ann@example.org")
    postroom.post_message(app, order, "Your quote", subject="Order 7",
                          attachments=[quote, ("terms.txt", b"Pay in 30 days", None)])
    [r] = sink.wait_for(1)
    assert [(p.get_filename(), p.get_content_type(), p.get_content()) for p in r.message.iter_attachments()] == [
        ("Devis n°7.pdf", "application/pdf", b"%PDF-1.4 quote"), ("terms.txt", "text/plain", "Pay in 30 days")]


def test_a_missing_file_raises_and_posts_nothing(app, tmp_path):
    order = postroom.create_record(app, "generic", "Order 8")
    with pytest.raises(postroom.InvalidInput, match="no such file"):
        postroom.post_message(app, order, "x", attachments=[tmp_path / "nope.pdf"])
    assert Message.select().count() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_an_unreadable_file_is_one_clear_error_and_posts_nothing(app, tmp_path):
    # Root reads any file, so the child drops to `nobody` first: a real EACCES on open().
    # pytest's tmp_path lies under a 0700 folder: `nobody` would not even see the file there.
    folder = tempfile.mkdtemp(prefix="postroom-unreadable-")
    os.chmod(folder, 0o755)
    secret = pathlib.Path(folder) / "secret.pdf"
    secret.write_bytes(b"%PDF-1.4")
    secret.chmod(0o600)
    order = postroom.create_record(app, "generic", "Order 9")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the error text, or "posted", then exit at once
        try:
            os.setgid(65534)
            os.setuid(65534)
            postroom.post_message(app, order, "x", attachments=[secret])
            os.write(write, b"posted")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write, f"{type(exc).__name__}: {exc}".encode()[:500])
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    said = os.read(read, 1000).decode()
    os.close(read)
    shutil.rmtree(folder)
    assert said == f"InvalidInput: attachment {secret}: cannot be read (Permission denied)"
    assert Message.select().count() == 0
