"""A text part the enqueuer gives is stored deflated against its HTML (a personalised
campaign's rows no longer carry their words twice) and goes out exactly as given."""
import pytest

from postroom.plugins.mail_queue import compose, textpack
from postroom.plugins.mail_queue.models import OutgoingMail

HTML = ('<h1>News for Zoë</h1><p>Hello Zoë (zoe@example.org), from the shop.</p><p>'
        + "This month's news from the shop. " * 20
        + '</p><p><a href="https://shop.example/u/t1-abc">Unsubscribe</a></p>')
TEXT = ("News for Zoë\n\nHello Zoë (zoe@example.org), from the shop.\n\n"
        + "This month's news from the shop. " * 20 + "\n\nUnsubscribe <https://shop.example/u/t1-abc>")


@pytest.mark.parametrize("html,text", [
    (HTML, TEXT),
    ("", TEXT),  # no HTML to lean on: deflated on its own, or kept as it is
    (HTML, "short"),
    (HTML, textpack.PACKED + "a text that starts like a packed one"),
    (HTML * 60, TEXT * 50),  # past deflate's 32 kB window
    (HTML, "emoji ☕ and\r\nline ends\n"),
    (HTML, None),
    (HTML, ""),
])
def test_a_stored_text_part_reads_back_exactly_as_given(html, text):
    stored = textpack.pack(html, text)
    assert textpack.unpack(html, stored) == text
    if text:
        assert len(stored) <= max(len(text), len(textpack.PACKED) + 4 * len(text))
    if text and text.startswith(textpack.PACKED):
        assert stored != text  # packed, so the reader never takes it for a packed value


def test_a_text_part_that_repeats_its_html_is_stored_in_a_fraction_of_its_size():
    stored = textpack.pack(HTML, TEXT)
    assert stored.startswith(textpack.PACKED) and len(stored) < len(TEXT) / 8
    assert textpack.pack(HTML, "short") == "short"  # never longer than the text itself


def test_a_given_text_part_is_stored_packed_and_goes_out_exactly_as_given(mail_host, sink, cli_run, db_url):
    host = mail_host(db_url=db_url)
    [mail_id] = host.service("mail").enqueue([{"email_to": "zoe@example.org", "subject": "News",
                                               "body_html": HTML, "body_text": TEXT, "auto_delete": False}])
    row = OutgoingMail.get_by_id(mail_id)
    assert row.body_text.startswith(textpack.PACKED) and len(row.body_text) < len(TEXT) / 8
    host.service("mail").process_queue()
    [received] = sink.wait_for(1)
    def part(kind):
        return received.message.get_body((kind,)).get_content().replace("\r\n", "\n")
    assert part("plain").rstrip("\n") == TEXT and part("html").rstrip("\n") == HTML
    # The same bytes as a text part stored as it is (boundaries come from the content).
    assert received.data.endswith(compose.body_part.__wrapped__(HTML, TEXT).split(b"\r\n", 1)[1])
    exported = cli_run(host, "queue", "export", str(mail_id)).stdout_bytes
    assert exported == received.data
