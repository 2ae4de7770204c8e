"""Email address parsing, validation and normalisation, shared by every part."""
import email.utils
import re

from .errors import InvalidInput

# Deliberately simple, like Odoo's: one @, a dotted domain, no spaces or control characters.
_ADDR = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    """True when text carries CR, LF or another control character (header injection)."""
    return bool(_CONTROL.search(text or ""))


def check_header_text(label: str, text: str) -> str:
    """Refuse CR/LF and other control characters in anything that becomes a header."""
    if has_control_chars(text):
        raise InvalidInput(f"{label} contains a line break or control character; refused (header injection)")
    return text


def split_address(text: str) -> tuple[str, str]:
    """'Name <a@b.c>' → ('Name', 'a@b.c'); raises InvalidInput if no valid address."""
    if text is None or not text.strip():
        raise InvalidInput("missing email address")
    check_header_text("email address", text)
    # getaddresses, not parseaddr: parseaddr silently keeps the first of several addresses
    # ('Boss <b@x.test>, victim@y.test' would become the boss alone).
    pairs = [p for p in email.utils.getaddresses([text.strip()]) if any(p)]
    if len(pairs) > 1:
        raise InvalidInput(f"several addresses where one is expected: {text.strip()!r}")
    name, addr = pairs[0] if pairs else ("", "")
    if not addr or not _ADDR.match(addr):
        raise InvalidInput(f"not a valid email address: {text.strip()!r}")
    return name, addr


def normalize(text: str) -> str:
    """The form used for matching: the bare address, lower-cased."""
    return split_address(text)[1].lower()


def is_valid(text: str | None) -> bool:
    """True when text holds one valid address."""
    try:
        split_address(text or "")
        return True
    except InvalidInput:
        return False


def address_setting(text: str) -> None:
    """A config key's check (core.config.Key): one valid address, else ValueError."""
    try:
        split_address(text)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
