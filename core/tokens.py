"""Signed tokens for addresses that come back to us (bounce, unsubscribe).

A token is `<value>-<signature>`, the signature an HMAC-SHA256 (truncated, base32) of the
purpose and value under the deployment's secret, which `init` creates and the database keeps,
so every worker of a deployment signs alike and nobody outside can forge one.
"""
import hmac
import secrets

from .models import Parameter

SECRET_PARAM = "core.secret"
SIG_CHARS = 16


def secret(host) -> bytes:
    """The deployment's secret, created on first use.

    Kept on the host once read back from the database (it never changes), so signing a
    batch of thousands of tokens costs no query per token. A secret this call had to create
    is not kept yet: the creating transaction might still roll back."""
    cached = getattr(host, "_token_secret", None)
    if cached is not None:
        return cached
    row = Parameter.get_or_none(Parameter.key == SECRET_PARAM)
    if row is None:
        Parameter.insert(key=SECRET_PARAM, value=secrets.token_hex(32)).on_conflict_ignore().execute()
        return Parameter.get(Parameter.key == SECRET_PARAM).value.encode()
    if host is not None:
        host._token_secret = row.value.encode()
    return row.value.encode()


# Lower-case RFC 4648 base32 of every 10-bit value (two characters): the 16 characters of
# a signature are 8 lookups (base64.b32encode is written in Python and cost as much as the
# HMAC itself; one signature per mail sent, two per campaign recipient).
_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648's base32 alphabet, lower case
_B32_PAIRS = [a + b for a in _B32 for b in _B32]
_SHIFTS = tuple(range(SIG_CHARS * 5 - 10, -1, -10))


def _sig(host, purpose: str, value: str) -> str:
    # One-shot hmac.digest, and base32 of only the bytes the kept characters encode
    # (16 characters = 10 bytes): the same signature at a fraction of the cost.
    return _base32(hmac.digest(secret(host), f"{purpose}:{value}".encode(), "sha256"))


def _base32(mac: bytes) -> str:
    bits = int.from_bytes(mac[:SIG_CHARS * 5 // 8], "big")
    return "".join([_B32_PAIRS[(bits >> shift) & 1023] for shift in _SHIFTS])


def _checked(value) -> str:
    value = str(value)
    if "-" in value or "@" in value:
        raise ValueError("token values may not contain '-' or '@'")
    return value


def sign(host, purpose: str, value: str) -> str:
    """`value-signature`; value must not contain '-' or '@'."""
    value = _checked(value)
    return f"{value}-{_sig(host, purpose, value)}"


def signer(host, purpose: str):
    """`sign(host, purpose, value)` as a function of the value alone, for a batch of one
    purpose's tokens (a campaign signs one per recipient): the secret is read, and the HMAC
    keyed and fed `purpose:`, once; each value then costs a copy of that state (the key's
    blocks are not hashed again)."""
    keyed = hmac.new(secret(host), f"{purpose}:".encode(), "sha256")

    def sign_value(value) -> str:
        value = _checked(value)
        mac = keyed.copy()
        mac.update(value.encode())
        return f"{value}-{_base32(mac.digest())}"
    return sign_value


def verify(host, purpose: str, token: str) -> str | None:
    """The value inside a genuine token, or None for a forged or mangled one."""
    value, _, sig = (token or "").rpartition("-")
    if not value or not sig:
        return None
    # Local parts are case-insensitive in practice; some MTAs lower-case them.
    return value if hmac.compare_digest(sig.lower(), _sig(host, purpose, value)) else None


def bounce_address(host, value: str) -> str:
    """The envelope sender (Return-Path) for one outgoing mail: `bounce+<value>-<sig>@domain`.

    `value` names what the mail was for and must be token-safe (letters and digits):
    `n<notification id>` for a chatter notification, or an enqueuer's own ref (mail_marketing
    uses `mt<trace id>`)."""
    return f"{host.config.get('bounce')}+{sign(host, 'bounce', value)}@{host.config.primary_domain}"


def bounce_value(host, address: str) -> str | None:
    """The value a genuine bounce address carries, else None (forged, mangled or not ours)."""
    local = (address or "").rsplit("@", 1)[0]
    base, plus, token = local.partition("+")
    if not plus or base.lower() != host.config.get("bounce").lower():
        return None
    return verify(host, "bounce", token)


def notification_token(notification_id: int) -> str:
    return f"n{int(notification_id)}"


def notification_of(value: str | None) -> int | None:
    """The notification id inside a bounce value made by `notification_token`, else None."""
    if value and value.startswith("n") and value[1:].isdigit():
        return int(value[1:])
    return None
