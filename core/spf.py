"""SPF (RFC 7208) through pyspf, the field's evaluator, asked of the configured resolver.

pyspf looks names up through its module-level `DNSLookup` hook (it picks dnspython or
pydns there); this module sets that hook once, to a function that asks the resolver of
the check in progress (`dns_resolver`, `dns_timeout`, the `core.dns_checks.Lookup` one)
and the system's when none is set. The inbound gateway checks senders with it, doctor
checks that the deployment's own relay is covered.
"""
import contextvars

import dns.exception
import dns.resolver
import spf

_resolver = contextvars.ContextVar("postroom_spf_resolver", default=None)


def _spf_lookup(name, qtype, strict=True, timeout=30):
    """pyspf's DNS backend, asking the resolver of the check in progress."""
    resolver = _resolver.get()
    if resolver is None:
        return spf.DNSLookup_dnspython(name, qtype, strict, timeout)
    out = []
    try:
        for rdata in resolver.resolve(name, qtype, search=False, lifetime=min(timeout, resolver.lifetime)):
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        pass
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {type(exc).__name__}") from None
    return out


spf.DNSLookup = _spf_lookup


def check(resolver, ip: str, sender: str, helo: str) -> str:
    """The SPF result for mail from `sender` sent by `ip`: pass, fail, softfail, neutral,
    none, permerror or temperror (also for a pyspf failure: it cannot tell)."""
    token = _resolver.set(resolver)
    try:
        return spf.check2(i=ip, s=sender, h=helo or "unknown", timeout=resolver.lifetime)[0] or "none"
    except Exception:  # noqa: BLE001 - a library bug reads as "could not tell"
        return "temperror"
    finally:
        _resolver.reset(token)
