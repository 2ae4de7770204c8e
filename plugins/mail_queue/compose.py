"""Building the RFC 5322 bytes of an outgoing mail, fast.

`email.message.EmailMessage` costs over a millisecond per message, which alone would cap a
drain near 600 mails/s. So the MIME structure is written out directly: a bulk batch repeats
the same body for every recipient, so its body (multipart/alternative: text + HTML) is built
once per distinct body and kept as bytes; a personalised campaign has a body per recipient,
so building one costs only the copy of its text (7bit when it is ASCII with lines the RFC
allows, else quoted-printable), while its attachments are encoded once (with the `email`
package, for RFC 2231 names) and reused by every recipient. Each recipient gets its own
header block, encoded with the `email` package's own RFC 2047 / address helpers (cached per
value where values repeat). The result parses back with `email` into the same message
(tests check it).
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
from email.message import MIMEPart

from postroom.core import attachments, emails
from postroom.core.html import to_text

from . import signing, textpack

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers Postroom writes itself; an enqueuer's `headers` may not replace them.
RESERVED = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
            "references", "reply-to", "return-path", "mime-version", "content-type",
            "content-transfer-encoding", "sender"}


def check_headers(headers: dict | None, values_scanned: bool = False) -> dict:
    """Extra headers as {name: value}; refuses bad names, reserved ones and CR/LF (injection).
    `values_scanned`: the caller found no control character in any value already."""
    clean = {}
    for name, value in (headers or {}).items():
        name = str(name)
        if name not in _GOOD_NAMES:
            if not _HEADER_NAME.match(name):
                emails.check_header_text("header name", name)
                raise emails.InvalidInput(f"bad header name {name!r}")
            if name.lower() in RESERVED:
                raise emails.InvalidInput(f"header {name} is set by Postroom and cannot be given")
            if len(_GOOD_NAMES) < 1024:
                _GOOD_NAMES.add(name)
        clean[name] = str(value) if values_scanned else emails.check_header_text(f"header {name}", str(value))
    return clean


_GOOD_NAMES = set()  # names already checked (the same few, on every mail of a batch)


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends (binascii: the C encoder `email` uses)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


MAX_LINE = 998  # RFC 5322 2.1.1: no line longer than this (without its CRLF)


def _encoded(text: str, boundary: bytes) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, content) of one text part. ASCII text whose lines the RFC
    allows goes as 7bit, as it is (quoted-printable cost more than everything else in a
    personalised body); anything else quoted-printable, which never holds "==" runs. 7bit
    content is checked not to hold the boundary (derived from the body, so it never does)."""
    # Each step only when needed: a personalised campaign builds one body per recipient,
    # and every pass over its text counted.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if (text.isascii() and "\x00" not in text
            and (len(text) <= MAX_LINE or max(map(len, text.split("\n"))) <= MAX_LINE)):
        data = text.encode("ascii").replace(b"\n", b"\r\n")
        if boundary not in data:
            return b"7bit", data
    return b"quoted-printable", _qp(text)


def _text_part(subtype: bytes, text: str, boundary: bytes) -> list[bytes]:
    """One text/* part (headers and content) as pieces to join; its content ends with
    one line break, as `email` writes it."""
    if not text.endswith("\n") or text.endswith("\n\n"):
        text = text.rstrip("\n") + "\n"
    cte, data = _encoded(text, boundary)
    return [b'Content-Type: text/', subtype, b'; charset="utf-8"\r\nContent-Transfer-Encoding: ', cte,
            b"\r\n\r\n", data]


def _multipart(subtype: bytes, boundary: bytes, parts) -> bytes:
    """A multipart entity: its Content-Type line, a blank line, the parts (bytes, or
    lists of pieces) between delimiters, joined once. Each part ends with CRLF, which the
    next delimiter line takes as its own."""
    out = [b'Content-Type: multipart/', subtype, b'; boundary="', boundary, b'"\r\n\r\n']
    for part in parts:
        out += (b"--", boundary, b"\r\n")
        if type(part) is list:
            out += part
        else:
            out.append(part)
    out += (b"--", boundary, b"--\r\n")
    return b"".join(out)


def _boundary(*values) -> bytes:
    """The boundaries' stem, derived from the content so that exports are byte-identical to
    what was sent. (Hashing the text itself: repr() of a body cost ten times the hash.)"""
    digest = hashlib.sha1()
    for value in values:
        text = value if isinstance(value, str) else repr(value)
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")  # apart, not concatenated: no copy of the body
    return ("==postroom-" + digest.hexdigest()[:24]).encode()


def _alternative(body_html: str, body_text: str | None, base: bytes, related=()) -> bytes:
    """multipart/alternative: the text (derived from the HTML when not given) and the HTML,
    the HTML inside a multipart/related with `related` (encoded inline parts) if any."""
    text = _text_part(b"plain", (to_text(body_html) if body_text is None else body_text) or " ", base)
    html = _text_part(b"html", body_html or "<p></p>", base)
    if related:
        html = _multipart(b"related", base + b"-r==", [html, *related])
    return _multipart(b"alternative", base + b"==", [text, html])


@functools.lru_cache(maxsize=256)
def body_part(body_html: str, body_text: str | None = None) -> bytes:
    """MIME-Version, Content-Type and the multipart/alternative body (text derived from the
    HTML when not given; `body_text` as the queue stores it, see textpack), built once per
    body. The result parses back with `email` into the same parts (tests check it)."""
    body_text = textpack.unpack(body_html, body_text)
    return b"MIME-Version: 1.0\r\n" + _alternative(body_html, body_text, _boundary(body_html, body_text))


# Bodies with attachments: few distinct ones per batch (one per chatter message or
# unpersonalised campaign) but large, so only the last few are kept; the encoded files
# themselves are kept apart, so a personalised campaign encodes each file once.
_WITH_FILES: collections.OrderedDict = collections.OrderedDict()
_WITH_FILES_KEEP = 4
_FILE_PARTS: collections.OrderedDict = collections.OrderedDict()
_FILE_PARTS_KEEP = 64 * 1024 * 1024  # bytes of encoded files kept (the last one always is)
_FILE_SPECS = weakref.WeakKeyDictionary()  # host → {ids: specs}; attachment rows never change
# How many MIME bodies with files were assembled and how many files were encoded (read by
# tests and benches: one body per distinct body, one encoding per file).
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


def _inline(spec) -> bool:
    name, mimetype, checksum, content_id = spec
    return bool(content_id) and mimetype.partition("/")[0] == "image"


def _file_part(host, spec) -> bytes:
    """One attachment as a MIME part (headers, base64 content), encoded once by the
    `email` package (RFC 2231 file names when not ASCII) and kept for the next bodies."""
    if spec in _FILE_PARTS:
        _FILE_PARTS.move_to_end(spec)
        return _FILE_PARTS[spec]
    name, mimetype, checksum, content_id = spec
    data = attachments.read_content(host, checksum, f"attachment {name}")
    maintype, _, subtype = mimetype.partition("/")
    part = MIMEPart(policy=policy.SMTP)
    if _inline(spec):
        part.set_content(data, maintype, subtype, cid=f"<{content_id}>", filename=name, disposition="inline")
    else:
        part.set_content(data, maintype, subtype, filename=name, disposition="attachment")
    encoded = part.as_bytes(policy=policy.SMTP)
    stats["file_parts_encoded"] += 1
    _FILE_PARTS[spec] = encoded
    while len(_FILE_PARTS) > 1 and sum(map(len, _FILE_PARTS.values())) > _FILE_PARTS_KEEP:
        _FILE_PARTS.popitem(last=False)
    return encoded


def body_with_files(host, body_html: str, specs: tuple, body_text: str | None = None) -> bytes:
    """The MIME body with its attachments: multipart/mixed around the text/HTML
    alternative, inline images (with a Content-ID) in a multipart/related beside the HTML
    (no mixed part when every file is inline). Each file is encoded once and its part
    reused for every body; a body is assembled once and reused for every recipient.
    `body_text` as the queue stores it (see textpack)."""
    key = (body_html, specs, body_text)
    if key in _WITH_FILES:
        _WITH_FILES.move_to_end(key)
        return _WITH_FILES[key]
    body_text = textpack.unpack(body_html, body_text)
    base = _boundary(body_html, body_text, specs)
    related = [_file_part(host, s) for s in specs if _inline(s)]
    files = [_file_part(host, s) for s in specs if not _inline(s)]
    body = _alternative(body_html, body_text, base, related)
    if files:
        body = _multipart(b"mixed", base + b"-m==", [body, *files])
    data = b"MIME-Version: 1.0\r\n" + body
    stats["bodies_with_files_built"] += 1
    _WITH_FILES[key] = data
    while len(_WITH_FILES) > 1 and (len(_WITH_FILES) > _WITH_FILES_KEEP
                                    or sum(map(len, _WITH_FILES.values())) > _FILE_PARTS_KEEP):
        _WITH_FILES.popitem(last=False)
    return data


# Per-recipient values (To, List-Unsubscribe) never repeat: the common ASCII cases are
# answered before the caches, which keep only what is costly to encode (a cache of values
# seen once cost time and memory that grew with the list).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # email.utils' specials: the name is quoted


def encode_text(value: str, header_name: str) -> str:
    """A header value as ASCII: as is when it is short ASCII, else RFC 2047 encoded-words."""
    if value.isascii() and len(value) < 900:
        return value
    return _encode_words(value, header_name)


@functools.lru_cache(maxsize=1024)
def _encode_words(value: str, header_name: str) -> str:
    return email.header.Header(value, "utf-8", header_name=header_name).encode(linesep="\r\n")


def encode_address(name: str | None, address: str) -> str:
    """`Name <addr>` with the name RFC 2047-encoded when it is not ASCII."""
    if not name:
        return address
    if name.isascii() and address.isascii() and not _SPECIALS.search(name):
        return f"{name} <{address}>"  # what formataddr returns for such a name
    return _formataddr(name, address)


@functools.lru_cache(maxsize=1024)
def _formataddr(name: str, address: str) -> str:
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

