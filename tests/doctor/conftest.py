"""Doctor fixtures: a loopback DNS server with a well-configured domain, and a host on it."""
import json

import pytest

from tests.support.dns import DnsServer

GOOD = {
    "example.com": ["v=spf1 ip4:192.0.2.10 -all", "google-site-verification=abc"],
    "default._domainkey.example.com": ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    "_dmarc.example.com": ["v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"],
}


@pytest.fixture
def dns_server():
    """A DNS server on 127.0.0.1 answering the TXT records of `GOOD` (edit `.records`)."""
    with DnsServer(GOOD) as server:
        yield server


@pytest.fixture
def doctor_host(make_host, dns_server):
    """doctor_host(plugins=[...], config={...}, **kw): a host whose DNS checks ask `dns_server`."""
    def factory(plugins=(), config=None, **kwargs):
        values = {"dns_resolver": dns_server.address, "dns_timeout": "2"}
        values.update(config or {})
        return make_host(plugins=plugins, config=values, **kwargs)
    return factory


@pytest.fixture
def checks(cli_run):
    """checks(host) → ({name: check dict}, exit code) from `postroom doctor --json`."""
    def run(host):
        result = cli_run(host, "doctor", "--json")
        data = json.loads(result.output)
        return {c["name"]: c for c in data["checks"]}, result.exit_code
    return run
