"""Does a domain's SPF record allow an IP address? A bounded RFC 7208 evaluation for doctor.

Covers the mechanisms that decide a sender's fate in practice: `ip4`, `ip6`, `a`, `mx`,
`include`, `redirect` and `all`, at most 10 DNS-querying terms (RFC 7208 4.6.4). Macros
and `exists`/`ptr` answer "unknown" rather than a guess. pyspf is not used because it asks
dnspython's process-wide resolver, and doctor must ask the configured `dns_resolver`.
"""
import ipaddress

from .dns_checks import Lookup, tags  # noqa: F401 - Lookup is the type of `lookup`

MAX_LOOKUPS = 10


class Unknown(Exception):
    """The record cannot be evaluated here (a macro, exists/ptr, a loop, too many lookups)."""


def _spf_record(lookup, domain):
    found = [r.strip() for r in lookup.txt(domain) if r.strip().lower().split(" ")[0] == "v=spf1"]
    return found[0] if len(found) == 1 else None


def _in(ip, addresses, prefix):
    for address in addresses:
        try:
            network = ipaddress.ip_network(f"{address}/{prefix}" if prefix else address, strict=False)
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


def _split_cidr(spec, ip):
    """`name/24//64` → (name, prefix for the ip's family)."""
    name, _, cidr = spec.partition("/")
    v4, _, v6 = cidr.partition("/")
    return name, (v6.lstrip("/") if ip.version == 6 else v4) or None


def allows(lookup, domain: str, address: str) -> bool | None:
    """True when `domain`'s SPF passes `address`, False when it does not, None when the
    domain has no (single) SPF record. Raises Unknown when it cannot tell."""
    ip = ipaddress.ip_address(address)
    budget = [MAX_LOOKUPS]

    def spend():
        budget[0] -= 1
        if budget[0] < 0:
            raise Unknown("more than 10 DNS lookups")

    def evaluate(name, depth):
        if depth > MAX_LOOKUPS:
            raise Unknown("include loop")
        record = _spf_record(lookup, name)
        if record is None:
            return None
        redirect = None
        for term in record.split()[1:]:
            term = term.lower()
            if "%" in term:
                raise Unknown(f"macro in {term}")
            qualifier = term[0] if term[0] in "+-~?" else "+"
            mech = term.lstrip("+-~?")
            if mech.startswith("redirect="):
                redirect = mech.split("=", 1)[1]
                continue
            if "=" in mech.split(":")[0]:
                continue  # another modifier (exp=)
            kind, _, arg = mech.partition(":")
            if "/" in kind:
                kind, _, rest = kind.partition("/")
                arg = f"{name}/{rest}"
            if kind == "all":
                matched = True
            elif kind in ("ip4", "ip6"):
                matched = _in(ip, [arg.split("/")[0]], arg.partition("/")[2] or None)
            elif kind == "a":
                spend()
                target, prefix = _split_cidr(arg or name, ip)
                matched = _in(ip, lookup.addresses(target or name), prefix)
            elif kind == "mx":
                spend()
                target, prefix = _split_cidr(arg or name, ip)
                matched = any(_in(ip, lookup.addresses(mx), prefix) for mx in lookup.mx(target or name)[:10])
            elif kind == "include":
                spend()
                inner = evaluate(arg, depth + 1)
                if inner is None:
                    raise Unknown(f"include:{arg} has no SPF record")
                matched = inner
            else:
                raise Unknown(f"{kind} is not evaluated here")
            if matched:
                return qualifier == "+"
        if redirect:
            spend()
            return evaluate(redirect, depth + 1)
        return False

    return evaluate(domain.rstrip(".").lower(), 0)
