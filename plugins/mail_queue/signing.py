"""DKIM signing of the final bytes of an outgoing mail (dkimpy, relaxed/relaxed).

A `Signer` is built once per batch: one query reads every key, each private key file is
read once per process (until the file changes). `sign` runs on the message exactly as it
goes on the wire, after every header is final, so nothing may change it afterwards.
"""
import email.utils
import os
import re

import dkim

from postroom.core.errors import PostroomError

from . import dkim_keys
from .models import DkimKey

# The headers a signature covers when the mail has them (RFC 6376 5.4: those a receiver
# shows or acts on, the List-* of RFC 8058, and the MIME headers that say how to read the
# body). From is signed once more than it occurs, so a second From cannot be added.
SIGNED = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
          b"references", b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version",
          b"content-type", b"content-transfer-encoding")
_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
_private_cache: dict = {}


class SigningFailed(PostroomError):
    """The mail has a signing key but could not be signed (e.g. its file is missing here)."""


def _private(host, key) -> bytes:
    path = dkim_keys.key_path(host, key)
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    cached = _private_cache.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, dkim_keys.read_private(host, key))
        _private_cache[path] = cached
    return cached[1]


def headers_to_sign(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    present = {m.group(1).lower() for m in _NAME.finditer(head)}
    return [h for h in SIGNED if h in present] + [b"from"]


class Signer:
    """The deployment's DKIM keys for one batch; false when there are none."""

    def __init__(self, host):
        self.host = host
        self.keys = {k.domain: k for k in DkimKey.select()}
        self._by_sender: dict = {}

    def __bool__(self):
        return bool(self.keys)

    def key_for(self, email_from: str | None):
        """The key for the From address's domain (or its parent), else None."""
        if email_from not in self._by_sender:
            address = email.utils.parseaddr(email_from)[1] if email_from else ""
            domain = address.rpartition("@")[2]
            self._by_sender[email_from] = dkim_keys.find(self.keys, domain) if domain else None
        return self._by_sender[email_from]

    def sign(self, data: bytes, email_from: str | None) -> bytes:
        """`data` with a DKIM-Signature on top when its From domain has a key, else as is."""
        key = self.key_for(email_from)
        if key is None:
            return data
        try:
            signature = dkim.sign(data, key.selector.encode(), key.domain.encode(), _private(self.host, key),
                                  canonicalize=(b"relaxed", b"relaxed"),
                                  signature_algorithm=dkim_keys.SIGNATURE_ALGORITHM[key.algorithm],
                                  include_headers=headers_to_sign(data))
        except PostroomError as exc:
            raise SigningFailed(str(exc)) from None
        except dkim.DKIMException as exc:
            raise SigningFailed(f"DKIM signing for {key.domain} failed: {exc}") from None
        return signature + data
