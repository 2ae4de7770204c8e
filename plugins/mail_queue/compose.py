"""Building the RFC 5322 bytes of an outgoing mail, fast.

`email.message.EmailMessage` costs over a millisecond per message, which alone would cap a
drain near 600 mails/s. A bulk batch repeats the same body for every recipient, so the MIME
body (multipart/alternative: text + HTML, quoted-printable) is built once per distinct body
with the `email` package and kept as bytes; each recipient only gets its own header block,
encoded with the `email` package's own RFC 2047 / address helpers (cached per value). The
result parses back with `email` into the same message (a test checks it).
"""
import binascii
import collections
import email
import email.header
import email.utils
import functools
import hashlib
import re
import weakref
from email import policy
from email.message import EmailMessage

from postroom.core import attachments, emails
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


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends (binascii: the C encoder `email` uses)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


_PART_HEAD = b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


@functools.lru_cache(maxsize=256)
def body_part(body_html: str, body_text: str | None = None) -> bytes:
    """MIME-Version, Content-Type and the encoded multipart/alternative body (text derived
    from the HTML, both quoted-printable), built once per body.

    Written out directly: a personalised campaign has a body per recipient, and building
    it through `EmailMessage` cost ten times more. The result parses back with `email`
    into the same parts (tests check it)."""
    # A stable boundary (derived from the body) keeps exports byte-identical to what was
    # sent; QP-encoded content can never contain "==" runs, so it cannot collide.
    boundary = ("==postroom-" + hashlib.sha1(body_html.encode()).hexdigest()[:24] + "==").encode()
    # Each part's content ends with a line break, as `email` writes it.
    text = _qp(((to_text(body_html) if body_text is None else body_text) or " ").rstrip("\n") + "\n")
    html = _qp((body_html or "<p></p>").rstrip("\n") + "\n")
    return b"".join((
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n',
        b"--", boundary, b"\r\n", _PART_HEAD % b"plain", text,
        b"--", boundary, b"\r\n", _PART_HEAD % b"html", html,
        b"--", boundary, b"--\r\n"))


# Bodies with attachments: few distinct ones per batch (one per chatter message or
# campaign) but large, so only the last few are kept.
_WITH_FILES: collections.OrderedDict = collections.OrderedDict()
_WITH_FILES_KEEP = 4
_FILE_SPECS = weakref.WeakKeyDictionary()  # host → {ids: specs}; attachment rows never change
# How many MIME bodies with files were built (read by tests and benches: one per message).
stats = collections.Counter()


def file_specs(host, ids) -> tuple:
    """(name, mimetype, checksum, content_id) of each attachment id, in order, cached per
    host (attachment rows are immutable). Ids that no longer exist are left out."""
    key = tuple(ids or ())
    if not key:
        return ()
    cache = _FILE_SPECS.setdefault(host, {})
    if key not in cache:
        if len(cache) > 1024:
            cache.clear()
        cache[key] = tuple((a.name, a.mimetype, a.checksum, a.content_id) for a in attachments.by_ids(key))
    return cache[key]


def body_with_files(host, body_html: str, specs: tuple, body_text: str | None = None) -> bytes:
    """The MIME body with its attachments: multipart/mixed around the text/HTML
    alternative, inline images (with a Content-ID) in a multipart/related beside the HTML.
    Built once per (body, attachments) and reused for every recipient; file names are
    RFC 2231-encoded by the `email` package when they are not ASCII."""
    key = (body_html, specs, body_text)
    if key in _WITH_FILES:
        _WITH_FILES.move_to_end(key)
        return _WITH_FILES[key]
    part = EmailMessage(policy=policy.SMTP)
    part.set_content((to_text(body_html) if body_text is None else body_text) or " ", cte="quoted-printable")
    part.add_alternative(body_html or "<p></p>", subtype="html", cte="quoted-printable")
    html_part = part.get_payload()[1]
    for name, mimetype, checksum, content_id in specs:
        data = attachments.read_content(host, checksum, f"attachment {name}")
        maintype, _, subtype = mimetype.partition("/")
        if content_id and maintype == "image":
            html_part.add_related(data, maintype, subtype, cid=f"<{content_id}>", filename=name,
                                  disposition="inline")
        else:
            part.add_attachment(data, maintype, subtype, filename=name)
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
    for n, sub in enumerate(p for p in part.walk() if p.is_multipart()):
        sub.set_boundary(f"==postroom-{digest}-{n}==")  # stable: exports match what was sent
    data = part.as_bytes(policy=policy.SMTP)
    stats["bodies_with_files_built"] += 1
    _WITH_FILES[key] = data
    while len(_WITH_FILES) > _WITH_FILES_KEEP:
        _WITH_FILES.popitem(last=False)
    return data


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
    if not address.isascii():  # SMTPUTF8 mail; formataddr refuses a non-ASCII address
        shown = email.utils.formataddr((name, "x@x"), charset="utf-8").rsplit(" <", 1)[0]
        return f"{shown} <{address}>"
    return email.utils.formataddr((name, address), charset="utf-8")


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> tuple[str, str]:
    """('Name', 'addr') of a header-style address, for the From header."""
    name, addr = email.utils.parseaddr(text)
    return name, addr


def headers_block(fields: list[tuple[str, str]], utf8: bool = False) -> bytes:
    """The header lines; UTF-8 only for a mail that goes with SMTPUTF8 (RFC 6532)."""
    return "".join(f"{k}: {v}\r\n" for k, v in fields if v).encode("utf-8" if utf8 else "ascii")


def build(mail, envelope_from: str, date: str, reply_to: str | None, body: bytes | None = None) -> bytes:
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
    # Internationalised domains travel as IDNA; a non-ASCII local part only with SMTPUTF8,
    # and then the header block is UTF-8 (the sender checked the server offers it).
    utf8 = emails.needs_smtputf8(mail.email_to) or emails.needs_smtputf8(from_addr)
    fields = [
        ("Return-Path", f"<{envelope_from}>"),
        ("From", encode_address(from_name or None, emails.wire_address(from_addr))),
        ("To", encode_address(mail.recipient_name or None, emails.wire_address(mail.email_to))),
        ("Subject", encode_text(mail.subject or "", "Subject")),
        ("Date", date),
        ("Message-Id", mail.message_id),
        ("In-Reply-To", mail.in_reply_to),
        ("References", mail.references),
        ("Reply-To", reply_to),
    ]
    for name, value in (mail.headers or {}).items():
        fields.append((name, encode_text(value, name)))
    if body is None:
        body = body_part(mail.body_html or "", getattr(mail, "body_text", None))
    return headers_block(fields, utf8) + body


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
    specs = file_specs(host, getattr(mail, "attachment_ids", None))
    body = body_with_files(host, mail.body_html or "", specs, getattr(mail, "body_text", None)) if specs else None
    data = build(mail, envelope_from, date, mail.reply_to, body)
    if prepare is None:
        prepare = bool(host.hook.postroom_mail_prepare.get_hookimpls())
    if prepare:
        # Hook implementations get a real EmailMessage (to add headers, sign); only then do
        # we pay for parsing and serialising it.
        message = email.message_from_bytes(data, policy=policy.SMTP)
        host.hook.postroom_mail_prepare(host=host, mail=mail, message=message)
        data = message.as_bytes(policy=policy.SMTP)
    return (signer if signer is not None else signing.Signer(host)).sign(data, mail.email_from)

