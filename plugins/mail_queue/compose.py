"""Building the RFC 5322 bytes of an outgoing mail, fast.

`email.message.EmailMessage` costs over a millisecond per message, which alone would cap a
drain near 600 mails/s. A bulk batch repeats the same body for every recipient, so the MIME
body (multipart/alternative: text + HTML, quoted-printable) is built once per distinct body
with the `email` package and kept as bytes; each recipient only gets its own header block,
encoded with the `email` package's own RFC 2047 / address helpers (cached per value). The
result parses back with `email` into the same message (a test checks it).
"""
import email
import email.header
import email.utils
import functools
import hashlib
import re
from email import policy
from email.message import EmailMessage

from postroom.core import emails
from postroom.core.html import to_text

from . import signing

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers Postroom writes itself; an enqueuer's `headers` may not replace them.
RESERVED = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
            "references", "reply-to", "return-path", "mime-version", "content-type",
            "content-transfer-encoding", "sender"}


def check_headers(headers: dict | None) -> dict:
    """Extra headers as {name: value}; refuses bad names, reserved ones and CR/LF (injection)."""
    clean = {}
    for name, value in (headers or {}).items():
        name = str(name)
        if not _HEADER_NAME.match(name):
            emails.check_header_text("header name", name)
            raise emails.InvalidInput(f"bad header name {name!r}")
        if name.lower() in RESERVED:
            raise emails.InvalidInput(f"header {name} is set by Postroom and cannot be given")
        clean[name] = emails.check_header_text(f"header {name}", str(value))
    return clean


@functools.lru_cache(maxsize=256)
def body_part(body_html: str) -> bytes:
    """MIME-Version, Content-Type and the encoded multipart body, built once per body."""
    part = EmailMessage(policy=policy.SMTP)
    part.set_content(to_text(body_html) or " ", cte="quoted-printable")
    part.add_alternative(body_html or "<p></p>", subtype="html", cte="quoted-printable")
    # A stable boundary (derived from the body) keeps exports byte-identical to what was
    # sent; QP-encoded content can never contain "==" runs, so it cannot collide.
    boundary = "==postroom-" + hashlib.sha1(body_html.encode()).hexdigest()[:24] + "=="
    part.set_boundary(boundary)
    return part.as_bytes(policy=policy.SMTP)


@functools.lru_cache(maxsize=4096)
def encode_text(value: str, header_name: str) -> str:
    """A header value as ASCII: as is when it is short ASCII, else RFC 2047 encoded-words."""
    if value.isascii() and len(value) < 900:
        return value
    return email.header.Header(value, "utf-8", header_name=header_name).encode(linesep="\r\n")


@functools.lru_cache(maxsize=4096)
def encode_address(name: str | None, address: str) -> str:
    """`Name <addr>` with the name RFC 2047-encoded when it is not ASCII."""
    if not name:
        return address
    return email.utils.formataddr((name, address), charset="utf-8")


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> tuple[str, str]:
    """('Name', 'addr') of a header-style address, for the From header."""
    name, addr = email.utils.parseaddr(text)
    return name, addr


def headers_block(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields if v).encode("ascii")


def build(mail, envelope_from: str, date: str, reply_to: str | None) -> bytes:
    """The full message bytes for one mail row (an `OutgoingMail` or anything with its
    attributes). Refuses (InvalidInput) a value carrying CR/LF, whatever wrote it to the
    database: header injection never reaches the wire."""
    for label, value in (("sender", mail.email_from), ("recipient", mail.email_to),
                         ("recipient name", mail.recipient_name), ("subject", mail.subject),
                         ("Reply-To", reply_to), ("Message-Id", mail.message_id),
                         ("References", mail.references), ("In-Reply-To", mail.in_reply_to)):
        if value and emails.has_control_chars(value):
            emails.check_header_text(label, value)
    from_name, from_addr = parse_address(mail.email_from)
    fields = [
        ("Return-Path", f"<{envelope_from}>"),
        ("From", encode_address(from_name or None, from_addr)),
        ("To", encode_address(mail.recipient_name or None, mail.email_to)),
        ("Subject", encode_text(mail.subject or "", "Subject")),
        ("Date", date),
        ("Message-Id", mail.message_id),
        ("In-Reply-To", mail.in_reply_to),
        ("References", mail.references),
        ("Reply-To", reply_to),
    ]
    for name, value in (mail.headers or {}).items():
        fields.append((name, encode_text(value, name)))
    return headers_block(fields) + body_part(mail.body_html or "")


def format_date(when) -> str:
    return email.utils.format_datetime(when)


def final_bytes(host, mail, envelope_from: str, date: str, prepare: bool | None = None,
                signer=None) -> bytes:
    """The exact bytes that go on the wire for one recipient's mail: the one point where
    a mail's final message is produced, for sending and for `queue export` alike.

    Plugins change the finished message (extra headers) here, through
    `postroom_mail_prepare`, after every other header is final; then the DKIM signature
    is added (`signing.Signer`), last, so it covers the headers as they leave. `prepare`
    says whether any plugin implements that hook and `signer` holds the keys (pass both
    once per batch; None looks them up). Raises InvalidInput for a value that would inject
    headers, `signing.SigningFailed` when a key exists but cannot sign."""
    data = build(mail, envelope_from, date, mail.reply_to)
    if prepare is None:
        prepare = bool(host.hook.postroom_mail_prepare.get_hookimpls())
    if prepare:
        # Hook implementations get a real EmailMessage (to add headers, sign); only then do
        # we pay for parsing and serialising it.
        message = email.message_from_bytes(data, policy=policy.SMTP)
        host.hook.postroom_mail_prepare(host=host, mail=mail, message=message)
        data = message.as_bytes(policy=policy.SMTP)
    return (signer if signer is not None else signing.Signer(host)).sign(data, mail.email_from)

