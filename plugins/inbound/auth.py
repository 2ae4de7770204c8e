"""Sender authentication of inbound mail: SPF (pyspf), DKIM (dkimpy) and DMARC alignment
from the two, asked of the configured resolver (`dns_resolver`, `dns_timeout`, as the
doctor's checks do).

The result is recorded on every decision and as an `Authentication-Results` header on the
kept original; an alias may require it (`--require-auth dmarc`). A DNS timeout is a
temporary error (`temperror`), never a pass: an alias that requires authentication then
answers 451 and the sender tries again.

Names under reserved test domains (RFC 2606/6761: .test, .example, .invalid, .localhost,
example.com/net/org) are not looked up unless `dns_resolver` names a resolver explicitly:
nobody publishes records for them on the Internet.
"""
import dataclasses

import dkim
import dns.exception
import dns.resolver

from postroom.core import spf
from postroom.core.dns_checks import Lookup, tags

_RESERVED = (".test", ".example", ".invalid", ".localhost", ".local")
_RESERVED_NAMES = ("example.com", "example.net", "example.org")
DKIM_VERIFY_MAX = 10 * 1024 * 1024  # bytes; larger signed mail: dkim=neutral (DMARC then rests on SPF)


class TempError(Exception):
    """No DNS answer in time."""


@dataclasses.dataclass
class AuthResult:
    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    policy: str = ""          # the From domain's published DMARC policy (none|quarantine|reject)
    mailfrom: str = ""
    header_from: str = ""
    dkim_domain: str = ""

    @property
    def temporary(self) -> bool:
        return "temperror" in (self.spf, self.dkim, self.dmarc)

    @property
    def text(self) -> str:
        """Authentication-Results style (RFC 8601), without the authserv-id."""
        parts = [f"spf={self.spf} smtp.mailfrom={self.mailfrom or '<>'}",
                 f"dkim={self.dkim}" + (f" header.d={self.dkim_domain}" if self.dkim_domain else ""),
                 f"dmarc={self.dmarc}" + (f" (p={self.policy})" if self.policy else "")
                 + f" header.from={self.header_from or '-'}"]
        return "; ".join(parts)


def _looked_up(host, domain: str) -> bool:
    if host.config.getlist("dns_resolver"):
        return True
    d = domain.lower().rstrip(".")
    return not (d.endswith(_RESERVED) or d in _RESERVED_NAMES or any(d.endswith("." + n) for n in _RESERVED_NAMES))


def _aligned(a: str, b: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return bool(a and b) and (a == b or a.endswith("." + b) or b.endswith("." + a))


def looks_up(host, mail) -> bool:
    """Whether `check` asks DNS for this mail (else it answers at once, from the mail alone)."""
    from_domain = (mail.from_address or "").rpartition("@")[2]
    return bool(from_domain) and _looked_up(host, from_domain)


def check(host, mail, mail_from: str, client_ip: str, helo: str = "") -> AuthResult:
    """SPF for the envelope sender (or HELO) from `client_ip`, the DKIM signatures, and DMARC
    for the From domain. Network work: call it outside any database transaction."""
    result = AuthResult(mailfrom=(mail_from or "").lower(), header_from=mail.from_address or "")
    from_domain = (mail.from_address or "").rpartition("@")[2]
    if not from_domain or not _looked_up(host, from_domain):
        return result
    lookup = Lookup(host)
    resolver = lookup.resolver
    if client_ip and (mail_from or helo):
        result.spf = spf.check(resolver, client_ip, mail_from or f"postmaster@{helo}", helo)
    result.dkim, result.dkim_domain = _dkim(mail, resolver)
    result.policy, published = _dmarc_policy(lookup, from_domain)
    spf_domain = (mail_from or "").rpartition("@")[2] or helo
    if published is None:
        result.dmarc = "temperror"
    elif not published:
        result.dmarc = "none"
    elif (result.spf == "pass" and _aligned(spf_domain, from_domain)) or \
            (result.dkim == "pass" and _aligned(result.dkim_domain, from_domain)):
        result.dmarc = "pass"
    elif result.temporary:
        result.dmarc = "temperror"
    else:
        result.dmarc = "fail"
    return result


def _dkim(mail, resolver) -> tuple[str, str]:
    if mail.msg.get("DKIM-Signature") is None:
        return "none", ""
    if mail.size > DKIM_VERIFY_MAX:
        return "neutral", ""  # dkimpy needs the whole message in memory, several times over
    raw = mail.raw_bytes()

    def txt(name, timeout=5):
        try:
            answer = resolver.resolve(name.decode() if isinstance(name, bytes) else name, "TXT",
                                      search=False, lifetime=min(timeout, resolver.lifetime))
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return None
        except dns.exception.DNSException:
            raise TempError(name) from None
        return b"".join(b"".join(r.strings) for r in answer)
    try:
        verifier = dkim.DKIM(raw)
        ok = verifier.verify(dnsfunc=txt)
        domain = (verifier.domain or b"").decode("ascii", "replace").lower()
        return ("pass" if ok else "fail"), domain
    except TempError:
        return "temperror", ""
    except Exception:  # noqa: BLE001 - a broken signature is a failed one
        return "fail", ""


def _dmarc_policy(lookup, domain: str):
    """(policy, published): the p= of `_dmarc.<domain>` (else of its parent, a simple
    stand-in for the organizational domain); published None on a DNS timeout."""
    labels = domain.lower().split(".")
    candidates = [domain] + ([".".join(labels[-2:])] if len(labels) > 2 else [])
    for name in candidates:
        try:
            records = [r for r in lookup.txt(f"_dmarc.{name}") if r.lower().startswith("v=dmarc1")]
        except Exception:  # noqa: BLE001 - Unreachable: no answer in time
            return "", None
        if records:
            return tags(records[0]).get("p", "none").lower(), True
    return "", False


def required(alias, result: AuthResult) -> bool:
    """Whether `alias` requires a DMARC pass of this sender: its `require_auth`, else by
    default for followers/partners aliases when the From domain publishes quarantine/reject
    (or its policy could not be read: a timeout is never a pass)."""
    setting = getattr(alias, "require_auth", None)
    if setting == "none":
        return False
    if setting == "dmarc":
        return True
    if alias.contact not in ("followers", "partners"):
        return False
    return result.policy in ("quarantine", "reject") or result.dmarc == "temperror"


def refusal(alias, address: str, result: AuthResult | None):
    """(code, text) when `alias` requires authentication this message lacks, else None."""
    if result is None or not required(alias, result) or result.dmarc == "pass":
        return None
    if result.temporary:
        return 451, (f"4.7.5 <{address}>: sender authentication could not be checked "
                     f"(DNS timeout: {result.text}); try again later")
    return 550, (f"5.7.1 <{address}>: sender authentication failed ({result.text}); "
                 f"alias {alias.local_part} requires a DMARC pass")


def header(host, result: AuthResult) -> bytes:
    """The `Authentication-Results:` line to put on top of the kept original."""
    return f"Authentication-Results: {host.config.primary_domain}; {result.text}\r\n".encode()

