"""SPF and DMARC of the sending domain, looked up with dnspython; the resolver plugins use
for their own DNS checks (mail_queue compares published DKIM keys with its signing keys).

The sending domain is the primary domain (`domains`, first entry): bounces leave with
`bounce+…@` that domain, so it is the one receivers check SPF against. The resolver is
configurable so an operator can ask a specific server and tests can start one on
loopback: `dns_resolver = 127.0.0.1:5353` (comma-separated `host[:port]`; empty means the
system's resolvers), `dns_timeout` (seconds, default 3). When no DNS server answers,
the checks say "could not check" as a warning: an unreachable resolver says nothing about
the domain.
"""
import dns.exception
import dns.resolver

from .doctor import Check
from .errors import first_line

NOT_PUBLIC = (".localhost", ".local", ".invalid", ".test", ".internal", ".lan")


def is_public(domain: str) -> bool:
    """False for names no public DNS knows (localhost, .local, .test, ...)."""
    domain = (domain or "").rstrip(".").lower()
    return "." in domain and not domain.endswith(NOT_PUBLIC)


class Unreachable(Exception):
    """No DNS server gave an answer."""


def lookup(host) -> "Lookup":
    """The doctor run's Lookup, shared by the core's and the plugins' checks (see
    `core.doctor.per_run`); a new one outside a run."""
    from .doctor import per_run
    return per_run(host, "dns_checks.lookup", lambda: Lookup(host))


class Lookup:
    """TXT lookups through the configured resolver; after one unreachable answer the rest
    fail fast instead of each waiting for its own timeout. Its answers are cached for their
    TTL for as long as the Lookup lives (one doctor run): a name two checks need is asked
    once, and the next run asks again."""

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
        self.resolver.cache = dns.resolver.Cache()
        self.resolver.lifetime = host.config.getfloat("dns_timeout", 3.0)
        self.resolver.timeout = self.resolver.lifetime

    def _answer(self, name: str, rdtype: str):
        if self.unreachable:
            raise Unreachable(self.unreachable)
        try:
            return self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            self.unreachable = first_line(exc) or type(exc).__name__
            raise Unreachable(self.unreachable) from None

    def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's strings joined); [] when none exist."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        """The IPv4 and IPv6 addresses of `name`; [] when it has none."""
        return [r.address for rdtype in ("A", "AAAA") for r in self._answer(name, rdtype)]


def _tagged(records: list[str], prefix: str) -> list[str]:
    prefix = prefix.lower()
    return [r.strip() for r in records
            if r.strip().lower() == prefix or r.strip().lower().startswith(prefix + " ")
            or r.strip().lower().startswith(prefix + ";")]


def tags(record: str) -> dict:
    """The `tag=value` pairs of a DKIM or DMARC record, tags lower-cased."""
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
    policy = tags(found[0]).get("p", "").lower()
    if policy in ("quarantine", "reject"):
        return Check("dns.dmarc", "ok", f"DMARC of {domain}: p={policy}")
    if policy == "none":
        return Check("dns.dmarc", "warn", f"DMARC of {domain} only monitors (p=none)",
                     "move to p=quarantine once your reports show SPF and DKIM passing")
    return Check("dns.dmarc", "fail", f"the DMARC record at {name} has no valid policy: {found[0]}",
                 remedy)


def check_dns(host) -> list[Check]:
    """SPF and DMARC of the sending domain; warnings when they cannot be made. (DKIM is
    checked by the plugin that holds the signing keys, against those keys.)"""
    domain = host.config.primary_domain.rstrip(".")
    if not is_public(domain):
        finding = f"could not check SPF/DKIM/DMARC: {domain} is not a public domain"
        remedy = "set domains in the config to the domain you send from"
        return [Check(n, "warn", finding, remedy) for n in ("dns.spf", "dns.dmarc")]
    dns_lookup = lookup(host)
    checks = []
    for name, query, judge in (
            ("dns.spf", domain, lambda r: spf(domain, r)),
            ("dns.dmarc", f"_dmarc.{domain}", lambda r: dmarc(domain, r))):
        try:
            checks.append(judge(dns_lookup.txt(query)))
        except Unreachable as exc:
            checks.append(Check(name, "warn", f"could not check {query}: no DNS answer ({exc})",
                                "check the server's DNS (or the dns_resolver setting) and run doctor again"))
    return checks
