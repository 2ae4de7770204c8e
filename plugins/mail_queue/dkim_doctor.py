"""Doctor checks of signing and sender authentication: each DKIM key against the record in
DNS, sending domains without a key, SPF coverage of the relay, DMARC alignment of From
with the signature's d=.

Sending domains are the default sender's and those of the mails still in the queue table
from the last 7 days (at most 500 distinct senders are read)."""
import datetime as dt
import ipaddress
import os
import socket
import stat

from postroom.core import dns_checks, spf
from postroom.core.doctor import Check

from . import compose, dkim_keys, servers
from .models import DkimKey, OutgoingMail

RECENT = dt.timedelta(days=7)
MAX_SENDERS = 500


def sending_domains(host) -> list[str]:
    from .addressing import default_from
    since = host.clock.now() - RECENT
    senders = [default_from(host)] + [r[0] for r in (
        OutgoingMail.select(OutgoingMail.email_from).distinct()
        .where((OutgoingMail.created_at >= since) & OutgoingMail.email_from.is_null(False))
        .limit(MAX_SENDERS).tuples())]
    domains = []
    for sender in senders:
        domain = compose.parse_address(sender)[1].rpartition("@")[2].lower()
        if domain and domain not in domains:
            domains.append(domain)
    return domains


def _key_check(host, lookup, key) -> Check:
    name = dkim_keys.record_name(key)
    where = f"DKIM key of {key.domain} (selector {key.selector})"
    show = f"publish the record `postroom dkim show {key.domain}` prints at {name}"
    path = dkim_keys.key_path(host, key)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return Check(f"dkim.{key.domain}", "fail", f"the private {where} is missing on this machine: "
                     f"{path}: {exc.strerror}; its mail fails instead of leaving unsigned",
                     f"copy data_dir/dkim/ from the machine that generated it, or postroom dkim "
                     f"remove {key.domain}")
    if mode & 0o077:
        return Check(f"dkim.{key.domain}", "fail", f"the private {where} is readable by others "
                     f"({path}, mode {mode:04o})", f"chmod 600 {path}")
    try:
        records = lookup.txt(name)
    except dns_checks.Unreachable as exc:
        return Check(f"dkim.{key.domain}", "warn", f"could not check {name}: no DNS answer ({exc})",
                     "check the server's DNS (or the dns_resolver setting) and run doctor again")
    published = [dns_checks.tags(r) for r in records if "p" in dns_checks.tags(r)]
    if not published:
        return Check(f"dkim.{key.domain}", "fail", f"no DKIM record at {name}: receivers cannot verify "
                     f"the signatures of {key.domain}", show)
    tags = published[0]
    public = "".join(tags["p"].split())
    if not public:
        return Check(f"dkim.{key.domain}", "fail", f"the DKIM record at {name} is revoked (empty p=)", show)
    if public != key.public_key:
        return Check(f"dkim.{key.domain}", "fail", f"the DNS record does not match the signing key "
                     f"({name})", show)
    if "y" in [f.strip() for f in tags.get("t", "").split(":")]:
        return Check(f"dkim.{key.domain}", "warn", f"the DKIM record at {name} is in test mode (t=y)",
                     "remove t=y once signatures verify")
    return Check(f"dkim.{key.domain}", "ok", f"{where} is published at {name} and matches")


def _unsigned_check(keys, domains) -> Check:
    public = [d for d in domains if dns_checks.is_public(d)]
    unsigned = [d for d in public if dkim_keys.find(keys, d) is None]
    if unsigned:
        return Check("dkim.unsigned", "warn", f"mail is sent from {', '.join(unsigned)} without a DKIM "
                     f"key: large receivers treat unsigned bulk mail as spam",
                     f"postroom dkim generate {unsigned[0]}")
    return Check("dkim.unsigned", "ok", f"every sending domain signs ({', '.join(public) or 'none public'})")


def _relay_addresses(host, lookup) -> tuple[str, list[str]]:
    """(what sends, its addresses). A relay on loopback is this host's own MTA: then this
    host's addresses count (`mail_public_ip` when it sits behind NAT)."""
    server = (servers.added_servers(host) or [servers.default_server(host)])[0]
    try:
        ip = ipaddress.ip_address(server.host)
        local = ip.is_loopback
    except ValueError:
        ip, local = None, server.host.lower() == "localhost"
    if not local:
        return f"the relay {server.host}", [str(ip)] if ip else lookup.addresses(server.host)
    configured = host.config.getlist("mail_public_ip")
    if configured:
        return "this host", configured
    try:
        found = {a[4][0] for a in socket.getaddrinfo(socket.getfqdn(), None)}
    except OSError:
        found = set()
    return "this host", sorted(a for a in found if not ipaddress.ip_address(a.split("%")[0]).is_loopback)


def _spf_check(host, lookup) -> Check:
    """Does the SPF record of the primary domain (the envelope sender's) pass the relay, or
    this host when the relay is a local MTA? pyspf evaluates it, as a receiver would."""
    domain = host.config.primary_domain
    if not dns_checks.is_public(domain):
        return Check("spf.relay", "warn", f"could not check SPF: {domain} is not a public domain",
                     "set domains in the config to the domain you send from")
    unreachable = Check("spf.relay", "warn", f"could not check the SPF of {domain}: no DNS answer",
                        "check the server's DNS (or the dns_resolver setting) and run doctor again")
    try:
        who, addresses = _relay_addresses(host, lookup)
    except dns_checks.Unreachable:
        return unreachable
    if not addresses:
        return Check("spf.relay", "warn", f"could not tell the public address of {who}",
                     "set mail_public_ip in the config to the address your mail leaves from")
    if lookup.unreachable:
        return unreachable
    verdicts = {a: spf.check(lookup.resolver, a, f"{host.config.get('bounce')}@{domain}", domain)
                for a in addresses}
    results = set(verdicts.values())
    if "temperror" in results:
        return unreachable
    if "none" in results:
        return Check("spf.relay", "fail", f"{domain} has no SPF record to cover {who}",
                     f'publish "v=spf1 ip4:{addresses[0]} -all" at {domain} (see dns.spf)')
    if "permerror" in results:
        return Check("spf.relay", "fail", f"the SPF record of {domain} is broken (permerror): receivers "
                     f"treat it as failing", "fix its syntax (see dns.spf); at most 10 DNS lookups")
    refused = [a for a, r in verdicts.items() if r != "pass"]
    if refused:
        return Check("spf.relay", "fail" if who == "this host" else "warn",
                     f"the SPF record of {domain} does not cover {who} ({', '.join(refused)}: "
                     f"{verdicts[refused[0]]})",
                     f"add ip4:{refused[0]} (or your provider's include:) to the SPF record of {domain}")
    return Check("spf.relay", "ok", f"the SPF record of {domain} covers {who} ({', '.join(addresses)})")


def _organizational(domain: str) -> str:
    # Without the public suffix list: the last two labels (right for .com/.org/.ro, too short
    # for co.uk-style suffixes, which only makes relaxed alignment look stricter).
    return ".".join(domain.split(".")[-2:])


def _alignment_check(lookup, keys, domains) -> list[Check]:
    checks = []
    for domain in [d for d in domains if dns_checks.is_public(d)]:
        key = dkim_keys.find(keys, domain)
        if key is None:
            continue
        try:
            records = (lookup.txt(f"_dmarc.{domain}")
                       or lookup.txt(f"_dmarc.{_organizational(domain)}"))
        except dns_checks.Unreachable:
            continue  # the key check already says DNS did not answer
        policy = next((dns_checks.tags(r) for r in records if r.strip().lower().startswith("v=dmarc1")), {})
        strict = policy.get("adkim", "r").lower() == "s"
        aligned = key.domain == domain if strict else _organizational(key.domain) == _organizational(domain)
        mode = "strict (adkim=s)" if strict else "relaxed"
        if aligned:
            checks.append(Check("dmarc.alignment", "ok",
                                f"From {domain} aligns with DKIM d={key.domain} ({mode})"))
        else:
            checks.append(Check("dmarc.alignment", "fail",
                                f"From {domain} does not align with DKIM d={key.domain} under {mode} "
                                f"DMARC: receivers treat its mail as unauthenticated",
                                f"postroom dkim generate {domain}"))
    return checks


def doctor_checks(host) -> list[Check]:
    keys = {k.domain: k for k in DkimKey.select().order_by(DkimKey.domain)}
    domains = sending_domains(host)
    lookup = dns_checks.lookup(host)
    checks = [_key_check(host, lookup, key) for key in keys.values()]
    checks.append(_unsigned_check(keys, domains))
    checks.append(_spf_check(host, lookup))
    checks.extend(_alignment_check(lookup, keys, domains))
    return checks

