"""SPF and DMARC of the sending domain, asked of a real DNS server on loopback. (DKIM is
checked against the signing keys: tests/mail_queue/test_dkim_doctor.py.)"""
from tests.support.dns import DnsServer
from tests.support.smtp import free_port


def _statuses(found):
    return {n: found[n]["status"] for n in ("dns.spf", "dns.dmarc")}


def test_a_well_configured_domain_passes_all_three(doctor_host, checks, dns_server):
    found, _ = checks(doctor_host())

    assert _statuses(found) == {"dns.spf": "ok", "dns.dmarc": "ok"}
    assert found["dns.spf"]["finding"] == "SPF of example.com: v=spf1 ip4:192.0.2.10 -all"
    assert found["dns.dmarc"]["finding"] == "DMARC of example.com: p=quarantine"
    assert {"example.com", "_dmarc.example.com"} <= set(dns_server.queries)


def test_weak_records_are_warnings(doctor_host, checks, dns_server):
    dns_server.records.update({
        "example.com": ["v=spf1 +all"],
        "default._domainkey.example.com": ["v=DKIM1; t=y; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"],
        "_dmarc.example.com": ["v=DMARC1; p=none"],
    })

    found, code = checks(doctor_host())

    assert _statuses(found) == {"dns.spf": "warn", "dns.dmarc": "warn"}
    assert "lets anyone send" in found["dns.spf"]["finding"]
    assert "p=none" in found["dns.dmarc"]["finding"]


def test_missing_records_fail_with_the_record_to_publish(doctor_host, checks, dns_server, cli_run):
    dns_server.records.clear()
    dns_server.records["example.com"] = ["google-site-verification=abc"]
    host = doctor_host()

    found, code = checks(host)

    assert _statuses(found) == {"dns.spf": "fail", "dns.dmarc": "fail"}
    assert code == 1
    assert found["dns.spf"]["finding"].startswith("example.com has no SPF record")
    assert '"v=spf1' in found["dns.spf"]["remedy"]
    assert "_dmarc.example.com" in found["dns.dmarc"]["remedy"]


def test_two_spf_records_and_a_policyless_dmarc_fail(doctor_host, checks, dns_server):
    dns_server.records.update({
        "example.com": ["v=spf1 ip4:192.0.2.10 -all", "v=spf1 include:_spf.example.net ~all"],
        "default._domainkey.example.com": ["v=DKIM1; p="],
        "_dmarc.example.com": ["v=DMARC1; rua=mailto:x@example.com"],
    })

    found, _ = checks(doctor_host())

    assert _statuses(found) == {"dns.spf": "fail", "dns.dmarc": "fail"}
    assert "2 SPF records" in found["dns.spf"]["finding"]


def test_no_reachable_dns_is_a_warning_not_a_failure(make_host, checks):
    silent = free_port()  # nothing answers there
    host = make_host(config={"dns_resolver": f"127.0.0.1:{silent}", "dns_timeout": "0.3"})

    found, _ = checks(host)

    assert _statuses(found) == {"dns.spf": "warn", "dns.dmarc": "warn"}
    assert found["dns.spf"]["finding"].startswith("could not check example.com: no DNS answer")


def test_a_local_domain_is_not_looked_up(make_host, checks):
    with DnsServer({}) as server:
        host = make_host(config={"domains": "localhost", "dns_resolver": server.address})
        found, _ = checks(host)
    assert found["dns.dmarc"]["status"] == "warn"
    assert "not a public domain" in found["dns.dmarc"]["finding"]
    assert server.queries == []


def test_a_resolver_setting_that_is_not_an_address_is_reported_not_raised(make_host, checks):
    found, _ = checks(make_host(config={"dns_resolver": "dns.example.net:53"}))

    assert _statuses(found) == {"dns.spf": "warn", "dns.dmarc": "warn"}
    assert "dns_resolver = dns.example.net:53 is not a list of IP[:port] addresses" in found["dns.spf"]["finding"]
    assert found["admin_email"]["status"] == "warn"  # the other core checks still ran
