"""SPF, DKIM and DMARC of the sending domain, looked up with dnspython.

The sending domain is the primary domain (`domains`, first entry): bounces leave with
`bounce+…@` that domain, so it is the one receivers check SPF against. The resolver is
configurable so an operator can ask a specific server and tests can start one on
loopback: `dns_resolver = 127.0.0.1:5353` (comma-separated `host[:port]`; empty means the
system's resolvers), `dns_timeout` (seconds, default 3), `dkim_selector` (default
`default`). When no DNS server answers, the checks say "could not check" as a warning:
an unreachable resolver says nothing about the domain.
"""
import dns.exception
import dns.resolver

from .doctor import Check

NOT_PUBLIC = (".localhost", ".local", ".invalid", ".test", ".internal", ".lan")


class Unreachable(Exception):
    """No DNS server gave an answer."""


class Lookup:
    """TXT lookups through the configured resolver; after one unreachable answer the rest
    fail fast instead of each waiting for its own timeout."""

    def __init__(self, host):
        spec = host.config.getlist("dns_resolver")
        self.unreachable = None
        try:
            self.resolver = dns.resolver.Resolver(configure=not spec)
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf: nothing to ask
            self.resolver = dns.resolver.Resolver(configure=False)
            self.unreachable = f"no system resolver configured ({type(exc).__name__})"
        if spec:
            addresses = []
            try:
                for item in spec:
                    address, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
                    addresses.append(address)
                    if port:
                        self.resolver.port = int(port)
                self.resolver.nameservers = addresses
            except ValueError:
                self.unreachable = (f"dns_resolver = {', '.join(spec)} is not a list of IP[:port] "
                                    f"addresses")
        self.resolver.lifetime = host.config.getfloat("dns_timeout", 3.0)
        self.resolver.timeout = self.resolver.lifetime

    def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's strings joined); [] when none exist."""
        if self.unreachable:
            raise Unreachable(self.unreachable)
        try:
            answer = self.resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            self.unreachable = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unreachable(self.unreachable) from None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _tagged(records: list[str], prefix: str) -> list[str]:
    prefix = prefix.lower()
    return [r.strip() for r in records
            if r.strip().lower() == prefix or r.strip().lower().startswith(prefix + " ")
            or r.strip().lower().startswith(prefix + ";")]


def _tags(record: str) -> dict:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


def spf(domain, records) -> Check:
    found = _tagged(records, "v=spf1")
    if not found:
        return Check("dns.spf", "fail", f"{domain} has no SPF record: receivers cannot tell your mail "
                     f"from forgery", f'publish a TXT record at {domain}: "v=spf1 include:<your mail '
                     f'provider> -all" (or ip4:<your server>)')
    if len(found) > 1:
        return Check("dns.spf", "fail", f"{domain} has {len(found)} SPF records; receivers treat that "
                     f"as an error", "merge them into one v=spf1 record")
    terms = found[0].lower().split()
    if "+all" in terms or "all" in terms:
        return Check("dns.spf", "warn", f"the SPF record of {domain} lets anyone send as it: {found[0]}",
                     "end it with -all or ~all after listing your servers")
    if "?all" in terms:
        return Check("dns.spf", "warn", f"the SPF record of {domain} is neutral (?all): {found[0]}",
                     "end it with -all or ~all after listing your servers")
    return Check("dns.spf", "ok", f"SPF of {domain}: {found[0]}")


def dkim(domain, selector, records) -> Check:
    name = f"{selector}._domainkey.{domain}"
    keys = [r for r in records if "p" in _tags(r)]
    if not keys:
        return Check("dns.dkim", "fail", f"no DKIM key at {name}: your mail is not verifiably yours",
                     f"publish the public key of your signing key at {name} (or set dkim_selector)")
    tags = _tags(keys[0])
    if not tags["p"]:
        return Check("dns.dkim", "fail", f"the DKIM key at {name} is revoked (empty p=)",
                     f"publish the current public key at {name}")
    if "y" in [f.strip() for f in tags.get("t", "").split(":")]:
        return Check("dns.dkim", "warn", f"the DKIM key at {name} is in test mode (t=y)",
                     "remove t=y once signatures verify")
    return Check("dns.dkim", "ok", f"DKIM key published at {name}")


def dmarc(domain, records) -> Check:
    name = f"_dmarc.{domain}"
    found = _tagged(records, "v=DMARC1")
    remedy = f'publish a TXT record at {name}: "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"'
    if not found:
        return Check("dns.dmarc", "fail", f"{domain} has no DMARC record; large providers refuse "
                     f"bulk mail without one", remedy)
    if len(found) > 1:
        return Check("dns.dmarc", "fail", f"{name} has {len(found)} DMARC records; receivers ignore "
                     f"them all", "keep exactly one")
    policy = _tags(found[0]).get("p", "").lower()
    if policy in ("quarantine", "reject"):
        return Check("dns.dmarc", "ok", f"DMARC of {domain}: p={policy}")
    if policy == "none":
        return Check("dns.dmarc", "warn", f"DMARC of {domain} only monitors (p=none)",
                     "move to p=quarantine once your reports show SPF and DKIM passing")
    return Check("dns.dmarc", "fail", f"the DMARC record at {name} has no valid policy: {found[0]}",
                 remedy)


def check_dns(host) -> list[Check]:
    """The three checks for the sending domain; warnings when they cannot be made."""
    domain = host.config.primary_domain.rstrip(".")
    if "." not in domain or domain.endswith(NOT_PUBLIC):
        finding = f"could not check SPF/DKIM/DMARC: {domain} is not a public domain"
        remedy = "set domains in the config to the domain you send from"
        return [Check(n, "warn", finding, remedy) for n in ("dns.spf", "dns.dkim", "dns.dmarc")]
    selector = host.config.get("dkim_selector") or "default"
    lookup = Lookup(host)
    checks = []
    for name, query, judge in (
            ("dns.spf", domain, lambda r: spf(domain, r)),
            ("dns.dkim", f"{selector}._domainkey.{domain}", lambda r: dkim(domain, selector, r)),
            ("dns.dmarc", f"_dmarc.{domain}", lambda r: dmarc(domain, r))):
        try:
            checks.append(judge(lookup.txt(query)))
        except Unreachable as exc:
            checks.append(Check(name, "warn", f"could not check {query}: no DNS answer ({exc})",
                                "check the server's DNS (or the dns_resolver setting) and run doctor again"))
    return checks
