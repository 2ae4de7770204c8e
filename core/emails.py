"""Email address parsing, validation and normalisation, shared by every part."""
import email.utils
import functools
import re

import idna

from .errors import InvalidInput

# Deliberately simple, like Odoo's: one @, a dotted domain, no spaces or control characters.
_ADDR = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A bare address with nothing a parser would have to interpret (no name, comment, quote,
# group or list): taken as it is, because email.utils' parser is the largest cost of a
# campaign's Python time (it ran several times per mail).
BARE = re.compile(r'[^\s<>()\[\]",;:\\@]+@[^\s<>()\[\]",;:\\@]+\Z')


def has_control_chars(text: str) -> bool:
    """True when text carries CR, LF or another control character (header injection)."""
    return bool(_CONTROL.search(text or ""))


def check_header_text(label: str, text: str) -> str:
    """Refuse CR/LF and other control characters in anything that becomes a header."""
    if has_control_chars(text):
        raise InvalidInput(f"{label} contains a line break or control character; refused (header injection)")
    return text


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str | None:
    """The domain as it travels (IDNA A-labels: `bücher.example` → `xn--bcher-kva.example`),
    or None when it is not a valid internationalised domain name."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


def wire_address(address: str) -> str:
    """A bare address with its domain in IDNA form (the local part as it is: a non-ASCII
    one needs SMTPUTF8, see `needs_smtputf8`). Addresses are stored as entered."""
    local, _, domain = address.rpartition("@")
    ascii_form = ascii_domain(domain)
    return f"{local}@{ascii_form}" if ascii_form and ascii_form != domain else address


def needs_smtputf8(address: str) -> bool:
    """True when the local part is not ASCII: only a server offering SMTPUTF8 (RFC 6531)
    can take it, and the message's headers then carry UTF-8 (RFC 6532)."""
    return not address.rpartition("@")[0].isascii()


def is_valid_bare(address: str) -> bool:
    """A bare address (no name) is valid: the ASCII pattern, after IDNA for the domain."""
    if not address or has_control_chars(address):
        return False
    if _ADDR.match(address):  # the pattern's local part already admits non-ASCII
        return True
    domain = address.rpartition("@")[2]
    return not domain.isascii() and ascii_domain(domain) is not None and bool(_ADDR.match(wire_address(address)))


def split_address(text: str) -> tuple[str, str]:
    """'Name <a@b.c>' → ('Name', 'a@b.c'); raises InvalidInput if no valid address.
    Non-ASCII local parts (SMTPUTF8) and internationalised domains are accepted."""
    if text is None or not text.strip():
        raise InvalidInput("missing email address")
    check_header_text("email address", text)
    bare = text.strip()
    # The common case first: an address the pattern takes whole is valid and bare as it is
    # (no control character is left, so BARE would take it too). A campaign normalises
    # every recipient at send time, and the two patterns and a second scan cost as much.
    if _ADDR.match(bare):
        return "", bare
    return _split_checked(bare)


def _split_checked(bare: str) -> tuple[str, str]:
    """`split_address` of a stripped text that passed its header check, without the
    shortcut (tests pin the shortcut to this)."""
    if BARE.match(bare):
        if not is_valid_bare(bare):
            raise InvalidInput(f"not a valid email address: {bare!r}")
        return "", bare
    # getaddresses, not parseaddr: parseaddr silently keeps the first of several addresses
    # ('Boss <b@x.test>, victim@y.test' would become the boss alone).
    pairs = [p for p in email.utils.getaddresses([bare]) if any(p)]
    if len(pairs) > 1:
        raise InvalidInput(f"several addresses where one is expected: {bare!r}")
    name, addr = pairs[0] if pairs else ("", "")
    if not addr or not is_valid_bare(addr):
        raise InvalidInput(f"not a valid email address: {bare!r}")
    return name, addr


def display_address(name: str | None, address: str) -> str:
    """`"Name" <addr>` as stored text (Unicode, quoted where RFC 5322 needs it), which
    `split_address` and the mail composer read back; the composer RFC 2047-encodes it."""
    if not name:
        return address
    return f'"{email.utils.quote(name)}" <{address}>'


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
