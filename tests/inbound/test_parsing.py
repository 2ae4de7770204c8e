"""`parsing.parse` reads a one-part text message (most mail) by a shorter path than a
MIME tree: it must find what the general walk finds, whatever the part says of itself."""
import email

import pytest

from postroom.plugins.inbound import parsing

HEAD = "From: Ann <ann@client.test>\r\nTo: support@example.com\r\nSubject: Hi\r\nMessage-Id: <p1@client.test>\r\n"


@pytest.mark.parametrize("extra, body", [
    ("Content-Type: text/plain; charset=utf-8\r\n", "Hello \u00e9t\u00e9\r\n".encode()),
    ("Content-Type: text/html; charset=utf-8\r\n", b"<p>Hello</p>\r\n"),
    ("Content-Type: text/plain; charset=latin-1\r\nContent-Transfer-Encoding: quoted-printable\r\n", b"caf=E9\r\n"),
    ("Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n", b"kept aside\r\n"),
    ("Content-Type: text/plain; charset=x-unknown\r\n", b"odd charset\r\n"),
    ("", b"no content type, a NUL \x00 and 8-bit \xff\r\n"),
])
def test_a_one_part_text_message_gives_the_body_and_attachments_the_mime_walk_gives(extra, body):
    data = (HEAD + extra + "\r\n").encode() + body
    mail = parsing.parse(data)
    msg = email.message_from_bytes(data)
    text, is_html = parsing.body_of(msg)
    assert (mail.body, mail.body_is_html) == (parsing.unsurrogate(text), is_html)
    assert mail.attachments == parsing.attachments_of(msg)


def test_unsurrogate_drops_nul_from_ascii_text_and_replaces_escaped_bytes():
    assert parsing.unsurrogate("a\x00b") == "ab"
    assert parsing.unsurrogate("plain") == "plain"
    assert parsing.unsurrogate("caf\udce9") == "caf\ufffd"


def test_the_remembered_from_header_stays_bounded_whatever_strangers_send():
    # A folded From header can be as long as the message: it is parsed, never kept.
    name = "A" + " very long name" * 400
    data = (f"From: \"{name}\"\r\n <ann@client.test>\r\nTo: support@example.com\r\nSubject: x\r\n\r\nbody\r\n").encode()
    assert parsing.parse(data).from_address == "ann@client.test"
    assert all(len(key) <= 998 for key in parsing._FROM)
    # Many different senders: the memo starts again rather than growing, and answers stay right.
    for i in range(parsing._FROM_MAX + 10):
        mail = parsing.parse(f"From: S{i} <s{i}@client.test>\r\nSubject: x\r\n\r\nb\r\n".encode())
        assert mail.from_address == f"s{i}@client.test"
    assert len(parsing._FROM) <= parsing._FROM_MAX
