"""Reading a received message, defensively: whatever the bytes, `parse` returns a `Mail`.

The stdlib parser with the compat32 policy never raises on broken MIME; each header is
decoded on its own and falls back to a replaced-characters reading, so an unknown charset
or a mangled encoded-word costs a few odd characters, never the message.
"""
import binascii
import dataclasses
import email
import email.header
import email.parser
import email.utils
import re

from postroom.core import emails

_MSGID = re.compile(r"<[^<>\s]{1,500}>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
AUTO_PRECEDENCE = ("bulk", "junk", "list")
DAEMONS = ("mailer-daemon", "postmaster")


@dataclasses.dataclass
class Mail:
    """What routing needs from one message. `raw` is the message's bytes, or None when it
    stays in `source` (a spooled file, for large messages): use `raw_bytes()` or `size`."""
    raw: bytes | None
    msg: email.message.Message
    message_id: str | None
    references: list          # In-Reply-To first, then References newest first
    subject: str
    from_address: str | None  # normalised, when the From header holds a valid address
    from_display: str | None  # "Name <addr>" suitable for email_from
    auto_reason: str | None   # why this is an automatic message, or None
    body: str
    body_is_html: bool
    # (name, bytes, mimetype, content_id) of every attached or inline non-body part
    attachments: list = dataclasses.field(default_factory=list)
    source: object = None     # the binary file the message was parsed from, or None
    size: int = 0

    def raw_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        self.source.seek(0)
        return self.source.read()

    @property
    def is_report(self) -> bool:
        return (self.msg.get_content_type() == "multipart/report"
                and (self.msg.get_param("report-type") or "").lower() == "delivery-status")


def header_text(msg, name: str) -> str:
    """A header decoded to text (RFC 2047 words included), control characters flattened."""
    raw = msg.get(name)
    if raw is None:
        return ""
    # compat32 keeps undecodable 8-bit header bytes as surrogates; read them as UTF-8.
    raw = unsurrogate(str(raw))
    if "=?" not in raw:  # no encoded word: decoding gives the text back as it is, at a cost
        return _CONTROL.sub(" ", raw).strip()
    try:
        text = unsurrogate(str(email.header.make_header(email.header.decode_header(raw))))
    except Exception:  # noqa: BLE001 - unknown charset, broken encoded word: keep the raw text
        text = str(raw)
    return _CONTROL.sub(" ", text).strip()


_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def unsurrogate(text: str) -> str:
    """Text safe for the database: lone surrogates become U+FFFD, NUL disappears.

    Escaped bytes (U+DC80-U+DCFF, how compat32 keeps undecodable 8-bit data) are read as
    UTF-8; any other lone surrogate (a UTF-7 body can encode one) cannot be encoded at all."""
    if text.isascii():  # no surrogate to replace (most headers, many bodies): the round trip is a copy
        return text.replace("\x00", "") if "\x00" in text else text
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")


def message_ids(text: str) -> list:
    return _MSGID.findall(text or "")


def _payload_text(part) -> str:
    data = part.get_payload(decode=True)
    if data is None:
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except (LookupError, UnicodeError):
        return data.decode("utf-8", errors="replace")


def body_of(msg) -> tuple[str, bool]:
    """The message text: its first inline HTML part, else its first inline plain part."""
    found = {}
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        disposition = (part.get("Content-Disposition") or "").lower()
        ctype = part.get_content_type()
        if "attachment" in disposition or ctype not in ("text/html", "text/plain"):
            continue
        found.setdefault(ctype, part)
    if "text/html" in found:
        return _payload_text(found["text/html"]), True
    if "text/plain" in found:
        return _payload_text(found["text/plain"]), False
    return "", False


def _filename(part, n: int) -> str:
    """The part's file name (RFC 2231 or RFC 2047-encoded), made safe, or a made-up one."""
    raw = part.get_filename() or part.get_param("name")
    if isinstance(raw, tuple):  # an RFC 2231 value compat32 left undecoded
        raw = email.utils.collapse_rfc2231_value(raw)
    name = ""
    if raw:
        try:
            name = str(email.header.make_header(email.header.decode_header(unsurrogate(str(raw)))))
        except Exception:  # noqa: BLE001 - a mangled encoded word: keep what was written
            name = unsurrogate(str(raw))
    name = _CONTROL.sub(" ", name).replace("/", "_").replace("\\", "_").strip()[:200]
    if not name or name in (".", ".."):
        ext = {"message/rfc822": ".eml"}.get(part.get_content_type(), "")
        name = f"part-{n}{ext}"
    return name


_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]+")


def _b64decode_chunked(text: str, step: int = 1 << 20) -> bytes:
    """Base64 text to bytes a megabyte at a time (whitespace and line breaks skipped), so
    decoding needs about the decoded size on top of the text, not three copies of it."""
    out, carry = bytearray(), ""
    for start in range(0, len(text), step):
        chunk = carry + _NOT_BASE64.sub("", text[start:start + step])
        usable = len(chunk) - len(chunk) % 4
        out += binascii.a2b_base64(chunk[:usable].encode("ascii"))
        carry = chunk[usable:]
    if carry.strip("="):
        raise ValueError("base64 text does not end on a whole group")
    return bytes(out)


def _decoded(part) -> bytes:
    """A part's decoded bytes. Base64 is decoded straight from the payload text: the email
    package splits it into one object per line first, five times the part's size in memory."""
    payload = part.get_payload()
    if isinstance(payload, str) and (part.get("Content-Transfer-Encoding") or "").strip().lower() == "base64":
        try:
            data = _b64decode_chunked(payload)
        except (binascii.Error, ValueError, UnicodeError):  # bad padding and the like: the package's lenient decoder
            data = None
        if data is not None:
            part.set_payload("")  # the decoded bytes are what is kept; free the text now
            return data
    return part.get_payload(decode=True) or b""


def attachments_of(msg) -> list:
    """(name, bytes, mimetype, content_id) of each part that is not the message's text:
    attachments, inline images (with their Content-ID), attached messages (as .eml)."""
    found = []

    def visit(part):
        if part.is_multipart():
            for sub in part.get_payload():
                visit(sub)
            return
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").lower()
        if (ctype in ("text/plain", "text/html") and "attachment" not in disposition
                                 and not part.get_filename()):
            return
        if part.get_content_maintype() == "message":
            inner = part.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else b""
        else:
            data = _decoded(part)
        cid = message_ids(header_text(part, "Content-ID"))
        found.append((_filename(part, len(found) + 1), data, ctype,
                      cid[0].strip("<>") if cid else None))
    if msg.get_content_maintype() == "multipart" or msg.get_content_type() not in ("text/plain", "text/html"):
        visit(msg)
    return found


class _FirstHeaders:
    """`msg.get` for the headers `parse` reads, from one pass over them: each `msg.get`
    lower-cases every header name of the message again (twenty lookups per message were a
    fifth of parsing one)."""
    __slots__ = ("msg", "first")

    def __init__(self, msg):
        self.msg, self.first = msg, {}
        for name, value in msg.raw_items():
            self.first.setdefault(name.lower(), (name, value))

    def get(self, name, default=None):
        found = self.first.get(name.lower())
        return default if found is None else self.msg.policy.header_fetch_parse(*found)


def _from_addresses(text: str) -> tuple:
    """(from_address, from_display) of a decoded From header, remembered per header: the
    same senders write all day, and parsing and checking the address twice cost as much
    as the rest of the headers."""
    found = _FROM.get(text)
    if found is None:
        from_address = from_display = None
        name, addr = email.utils.parseaddr(text)
        if len(addr) <= 320 and emails.is_valid(addr):
            from_address = addr.lower()
            name = _CONTROL.sub(" ", name).replace('"', "").strip()
            from_display = email.utils.formataddr((name, addr)) if name else addr
            if len(from_display) > 500 or not emails.is_valid(from_display):
                from_display = addr
        found = (from_address, from_display)
        if len(text) <= _FROM_KEY_MAX:  # a folded header can be far longer: not kept
            if len(_FROM) >= _FROM_MAX:  # many different ones: start again
                _FROM.clear()
            _FROM[text] = found
    return found


# Decoded From header -> (address, display), for headers of one line (RFC 5322: at most
# 998 characters), so the memo stays within a few megabytes whatever strangers send.
_FROM: dict = {}
_FROM_MAX = 4096
_FROM_KEY_MAX = 998


def auto_reason(msg, our_domains=(), bounce_local="bounce") -> str | None:
    """Why the message is automatic (so it must never make us send mail back), or None."""
    auto = header_text(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = header_text(msg, "Precedence").lower()
    if precedence in AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if msg.get(name) is not None:
            return f"{name} header"
    # Our own outgoing mail carries Return-Path: <bounce+token@our domain>; seeing it at the
    # top of a received mail means one of our mails came back round (a forward, a loop).
    return_path = header_text(msg, "Return-Path")
    if not return_path:
        return None
    _, return_path = email.utils.parseaddr(return_path)
    local, _, domain = return_path.lower().rpartition("@")
    if domain in our_domains and local.split("+")[0] == bounce_local:
        return "our own mail came back (Return-Path)"
    return None


def parse(data, our_domains=(), bounce_local="bounce") -> Mail:
    """Parse a message into a `Mail`: `data` is bytes, or a binary file (a spool), which is
    fed to the parser in chunks so that its bytes are never held in memory whole."""
    source, size = None, 0
    if hasattr(data, "read"):
        source, parser = data, email.parser.BytesFeedParser()
        data.seek(0)
        for chunk in iter(lambda: data.read(1 << 16), b""):
            size += len(chunk)
            parser.feed(chunk)
        msg, data = parser.close(), None
    else:
        msg, size = email.message_from_bytes(data), len(data)
    headers = _FirstHeaders(msg)
    ids = message_ids(header_text(headers, "Message-Id"))
    refs = message_ids(header_text(headers, "In-Reply-To"))
    refs += [r for r in reversed(message_ids(header_text(headers, "References"))) if r not in refs]
    subject = header_text(headers, "Subject")[:998]
    from_address, from_display = _from_addresses(header_text(headers, "From"))
    ctype = msg.get_content_type()
    if not msg.is_multipart() and ctype in ("text/plain", "text/html"):
        # One text part (most mail): what body_of and attachments_of find, without walking
        # the message and asking each of its header lookups again (they were a tenth of a parse).
        files = []
        try:
            inline = "attachment" not in (headers.get("Content-Disposition") or "").lower()
            body, is_html = (_payload_text(msg), ctype == "text/html") if inline else ("", False)
        except Exception:  # noqa: BLE001 - a part the parser cannot decode: keep the rest
            body, is_html = "", False
    else:
        try:
            body, is_html = body_of(msg)
        except Exception:  # noqa: BLE001 - a part the parser cannot decode: keep the rest
            body, is_html = "", False
        try:
            files = attachments_of(msg)
        except Exception:  # noqa: BLE001 - broken MIME structure: the text still gets through
            files = []
    # PostgreSQL refuses NUL in text; nobody meant one.
    body = unsurrogate(body)
    return Mail(raw=data, msg=msg, message_id=ids[0] if ids else None, references=refs,
                subject=subject, from_address=from_address, from_display=from_display,
                auto_reason=auto_reason(headers, our_domains, bounce_local), body=body, body_is_html=is_html,
                attachments=files, source=source, size=size)


def is_daemon(address: str | None) -> bool:
    """True for MAILER-DAEMON@… and postmaster@… senders."""
    return (address or "").split("@")[0].lower() in DAEMONS
