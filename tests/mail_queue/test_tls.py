"""Encrypted and authenticated servers: STARTTLS, implicit TLS and AUTH, over loopback,
with a certificate the test makes and the deployment trusts through `smtp_ca_file`."""
import email
import email.policy
import json
import subprocess
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from postroom.core import records
from tests.support.smtp import free_port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Recorder:
    def __init__(self):
        self.messages, self.lock = [], threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((session.authenticated, envelope.rcpt_tos,
                                  email.message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 2.0.0 Ok: queued"


def _authenticator(server, session, envelope, mechanism, auth_data):
    # handled=False: let aiosmtpd answer a refusal with its own 535.
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"mailer", b"s3cret"), handled=False)


@pytest.fixture
def tls_server(certificate):
    """tls_server(implicit=False) → (controller, recorder): STARTTLS required before AUTH
    and mail, or TLS from the first byte (implicit=True)."""
    import ssl
    started = []

    def start(implicit=False):
        cert, key = certificate
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        recorder = Recorder()
        kwargs = {"ssl_context": context} if implicit else {"tls_context": context, "require_starttls": True}
        controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), authenticator=_authenticator,
                                # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the
                                # whole connection is encrypted, so AUTH may be offered at once.
                                auth_require_tls=not implicit, server_hostname="localhost", **kwargs)
        controller.start()
        started.append(controller)
        return controller, recorder
    yield start
    for c in started:
        c.stop()


def _host(make_host, certificate, trust=True):
    config = {"smtp_ca_file": str(certificate[0])} if trust else {}
    host = make_host(plugins=["mail_queue"], config=config)
    records.ensure_admin(host, "admin@example.com")
    return host


@pytest.mark.parametrize("encryption, implicit", [("starttls", False), ("ssl", True)])
def test_mail_goes_out_encrypted_and_authenticated(make_host, certificate, tls_server, cli_run,
                                                   monkeypatch, encryption, implicit):
    controller, recorder = tls_server(implicit=implicit)
    host = _host(make_host, certificate)
    monkeypatch.setenv("RELAY_PASSWORD", "s3cret")
    assert cli_run(host, "server", "add", "relay", "--host", "127.0.0.1", "--port", controller.port,
                   "--encryption", encryption, "--user", "mailer", "--password-env", "RELAY_PASSWORD").exit_code == 0
    tested = cli_run(host, "server", "test", "relay")
    assert tested.exit_code == 0, tested.stderr
    assert "AUTH" in tested.output
    sent = cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Invoice", "--body", "Attached")
    assert sent.exit_code == 0, sent.output + sent.stderr
    [(authenticated, rcpts, message)] = recorder.messages
    assert authenticated and rcpts == ["ann@example.org"] and message["Subject"] == "Invoice"


def test_a_wrong_password_fails_the_server_test_with_the_servers_words(make_host, certificate, tls_server,
                                                                         cli_run, monkeypatch):
    controller, recorder = tls_server()
    host = _host(make_host, certificate)
    monkeypatch.setenv("RELAY_PASSWORD", "guess")
    cli_run(host, "server", "add", "relay", "--host", "127.0.0.1", "--port", controller.port,
            "--encryption", "starttls", "--user", "mailer", "--password-env", "RELAY_PASSWORD")
    result = cli_run(host, "server", "test", "relay")
    assert result.exit_code != 0
    assert "SMTPAuthenticationError" in result.stderr and "535" in result.stderr
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")
    assert recorder.messages == []
    [mail] = json.loads(cli_run(host, "queue", "list", "--json").output)
    assert "SMTPAuthenticationError" in (mail["failure_reason"] or "")


def test_an_untrusted_certificate_is_refused(make_host, certificate, tls_server, cli_run):
    controller, recorder = tls_server()
    host = _host(make_host, certificate, trust=False)
    cli_run(host, "server", "add", "relay", "--host", "127.0.0.1", "--port", controller.port,
            "--encryption", "starttls")
    result = cli_run(host, "server", "test", "relay")
    assert result.exit_code != 0 and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert recorder.messages == []


def test_a_server_requiring_starttls_refuses_plain_mail(make_host, certificate, tls_server, cli_run):
    controller, recorder = tls_server()
    host = _host(make_host, certificate)
    cli_run(host, "server", "add", "relay", "--host", "127.0.0.1", "--port", controller.port)
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")
    assert recorder.messages == []
    [mail] = json.loads(cli_run(host, "queue", "list", "--json").output)
    assert mail["state"] in ("outgoing", "exception") and "STARTTLS" in (mail["failure_reason"] or "")


def test_a_certificate_failing_verification_fails_the_mail_at_once_and_doctor_says_why(
        make_host, certificate, tls_server, cli_run):
    controller, recorder = tls_server()
    host = _host(make_host, certificate, trust=False)
    cli_run(host, "server", "add", "relay", "--host", "127.0.0.1", "--port", controller.port,
            "--encryption", "starttls")
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")
    [mail] = json.loads(cli_run(host, "queue", "list", "--json").output)
    assert (mail["state"], mail["failure_type"], mail["attempts"]) == ("exception", "mail_smtp", 1)
    assert "certificate failed verification" in mail["failure_reason"]
    assert "not retried" in mail["failure_reason"] and recorder.messages == []
    doctor = cli_run(host, "doctor")
    assert doctor.exit_code != 0
    assert "TLS certificate of server relay failed verification" in doctor.output
    assert "mail fails because of a server's TLS certificate" in doctor.output
