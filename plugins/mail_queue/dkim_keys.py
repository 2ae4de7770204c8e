"""DKIM keys: generating a key pair per domain, the DNS record to publish, finding the key
that signs a sender's mail.

The private key is written to `data_dir/dkim/DOMAIN.SELECTOR.key` with mode 0600 (the
folder 0700); the database keeps the domain, selector, algorithm, public key and file
name, so every worker agrees on *which* domains sign and `doctor` can compare DNS with the
key without reading the secret. Like OpenDKIM's KeyTable and rspamd, the secret stays a
file: database dumps, replicas and backups never carry it. Several sending machines each
need a copy of `data_dir/dkim/` (or share the folder).
"""
import base64
import os
import re

from postroom.core.errors import Conflict, InvalidInput, NotFound

from .models import DkimKey

ALGORITHMS = ("rsa-2048", "ed25519")
# What dkimpy calls each algorithm, and the k= tag of its DNS record.
SIGNATURE_ALGORITHM = {"rsa-2048": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
KEY_TYPE = {"rsa-2048": "rsa", "ed25519": "ed25519"}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _labels_ok(name: str) -> bool:
    return all(_LABEL.match(label) for label in name.split("."))


def check_domain(domain: str) -> str:
    """The domain lower-cased and without a final dot; InvalidInput when it is not a host name."""
    name = (domain or "").strip().lower().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise InvalidInput(f"{domain!r} is not a domain name") from None
    if len(name) > 253 or "." not in name or not _labels_ok(name):
        raise InvalidInput(f"{domain!r} is not a domain name (e.g. example.com)")
    return name


def check_selector(selector: str) -> str:
    name = (selector or "").strip().lower()
    if not name or len(name) > 63 or not _labels_ok(name):
        raise InvalidInput(f"{selector!r} is not a DKIM selector (letters, digits and '-', e.g. "
                           f"postroom2026)")
    return name


def dkim_dir(host) -> str:
    return os.path.join(host.config.path_of("data_dir"), "dkim")


def key_path(host, key: DkimKey) -> str:
    return os.path.join(host.config.path_of("data_dir"), key.key_file)


def _new_pair(algorithm: str) -> tuple[bytes, str]:
    """(private key as dkimpy reads it, public key base64 as DNS publishes it)."""
    if algorithm == "ed25519":
        import nacl.signing
        private = nacl.signing.SigningKey.generate()
        # RFC 8463: p= is the raw 32-byte public key; dkimpy reads the private key as the
        # base64 of its 32-byte seed.
        return (base64.b64encode(bytes(private)) + b"\n",
                base64.b64encode(bytes(private.verify_key)).decode())
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def _write_private(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # O_EXCL with the mode given at creation: the secret is never readable by others,
    # not even for the moment between creating and chmod-ing.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def generate(host, domain: str, selector: str | None = None, algorithm: str = "rsa-2048") -> DkimKey:
    """Create the key pair of `domain` and store it; Conflict when the domain has one."""
    domain = check_domain(domain)
    selector = check_selector(selector or host.config.get("dkim_selector") or "postroom")
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if DkimKey.get_or_none(DkimKey.domain == domain) is not None:
        raise Conflict(f"{domain} already has a DKIM key; to replace it: postroom dkim remove {domain}, "
                       f"then generate again (and publish the new record)")
    private, public = _new_pair(algorithm)
    relative = os.path.join("dkim", f"{domain}.{selector}.key")
    path = os.path.join(host.config.path_of("data_dir"), relative)
    if os.path.exists(path):
        raise Conflict(f"{path} already exists and is not a key Postroom knows: move it away first")
    _write_private(path, private)
    try:
        with host.transaction():
            key = DkimKey.create(domain=domain, selector=selector, algorithm=algorithm,
                                 public_key=public, key_file=relative, created_at=host.clock.now())
    except Exception:
        os.unlink(path)
        raise
    host.log.info("dkim: %s key generated for %s (selector %s, private key %s)", algorithm, domain,
                  selector, path)
    return key


def get(domain: str) -> DkimKey:
    key = DkimKey.get_or_none(DkimKey.domain == check_domain(domain))
    if key is None:
        raise NotFound(f"{domain} has no DKIM key (postroom dkim generate {domain})")
    return key


def remove(host, domain: str) -> None:
    key = get(domain)
    with host.transaction():
        key.delete_instance()
    try:
        os.unlink(key_path(host, key))
    except FileNotFoundError:
        pass
    host.log.info("dkim: key of %s (selector %s) removed", key.domain, key.selector)


def record_name(key: DkimKey) -> str:
    return f"{key.selector}._domainkey.{key.domain}"


def record_value(key: DkimKey) -> str:
    return f"v=DKIM1; k={KEY_TYPE[key.algorithm]}; p={key.public_key}"


def zone_line(key: DkimKey) -> str:
    """The record as a zone-file line, its value split into strings of at most 255 bytes."""
    value = record_value(key)
    parts = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{record_name(key)}. IN TXT ( {parts} )"


def find(keys: dict, sender_domain: str):
    """The key that signs for `sender_domain`: its own, else its nearest parent's."""
    labels = (sender_domain or "").lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):
        key = keys.get(".".join(labels[i:]))
        if key is not None:
            return key
    return None


def read_private(host, key: DkimKey) -> bytes:
    path = key_path(host, key)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise NotFound(f"the DKIM private key of {key.domain} cannot be read on this machine: {path}: "
                       f"{exc.strerror} (copy data_dir/dkim/ here, or postroom dkim remove "
                       f"{key.domain})") from None
