"""Names and international addresses on the wire: To/From display names (RFC 2047),
SMTPUTF8 for non-ASCII local parts (with and without a server offering it), IDNA domains."""
import email.header

from postroom.core import chatter, records
from postroom.core.models import Partner
from postroom.plugins.mail_queue.models import OutgoingMail

from .conftest import record_with_followers


def decoded(value) -> str:
    return str(email.header.make_header(email.header.decode_header(str(value))))


def test_notification_to_and_from_carry_names_rfc2047_encoded(mail_host, sink, db_url):
    host = mail_host(db_url=db_url)
    rec = records.create_record(host, "generic", "Order 42")
    records.follow(host, rec, records.create_partner(host, "José Smith, Jr.", "jose@example.org"))
    author = records.create_partner(host, "Zoë Brontë", "zoe@example.com")
    chatter.post_message(host, rec, "Shipped", subject="Order 42", author=author)
    [r] = sink.wait_for(1)
    raw = r.data.decode("ascii")  # 7-bit: the names are encoded words
    assert "=?utf-8?" in raw.split("\r\n\r\n")[0]
    assert (r.message["To"].addresses[0].display_name, r.message["To"].addresses[0].addr_spec) == (
        "José Smith, Jr.", "jose@example.org")
    assert (r.message["From"].addresses[0].display_name, r.message["From"].addresses[0].addr_spec) == (
        "Zoë Brontë", "zoe@example.com")


def test_a_non_ascii_local_part_goes_with_smtputf8_when_the_server_offers_it(mail_host, sink):
    host = mail_host()
    rec, _ = record_with_followers(host, "josé@client.org")
    chatter.post_message(host, rec, "Hola", subject="Pedido")
    [r] = sink.wait_for(1)
    assert r.rcpt_tos == ["josé@client.org"]
    assert "SMTPUTF8" in r.mail_options
    headers = r.data.split(b"\r\n\r\n")[0].decode("utf-8")
    assert "josé@client.org" in headers
    assert OutgoingMail.select().count() == 0  # sent and auto-deleted


def test_without_smtputf8_such_a_mail_fails_once_as_invalid_saying_why(mail_host, smtp_sink, cli_run):
    plain = smtp_sink(smtputf8=False)
    host = mail_host(smtp_port=plain.port)
    rec, _ = record_with_followers(host, "josé@client.org", "ann@example.org")
    msg = chatter.post_message(host, rec, "Hola", subject="Pedido")
    got = plain.wait_for(1)
    assert [r.rcpt_tos for r in got] == [["ann@example.org"]]
    rows = {n["email"]: n for n in chatter.notification_rows(msg)}
    failed = rows["josé@client.org"]
    assert (failed["status"], failed["failure_type"]) == ("exception", "mail_email_invalid")
    assert "SMTPUTF8" in failed["failure_reason"] and "does not offer it" in failed["failure_reason"]
    [mail] = OutgoingMail.select().where(OutgoingMail.state == "exception")
    assert mail.attempts <= 1 and mail.next_attempt_at is None  # failed once, not retried
    assert chatter.envelope(msg) == "red"


def test_an_idn_domain_is_stored_as_entered_and_sent_as_idna(mail_host, sink, cli_run):
    host = mail_host()
    result = cli_run(host, "partner", "add", "Anna Müller", "anna@bücher.example")
    assert result.exit_code == 0, result.output
    assert Partner.get(Partner.name == "Anna Müller").email == "anna@bücher.example"
    rec = records.create_record(host, "generic", "Books")
    records.follow(host, rec, records.find_partner(host, "anna@bücher.example"))
    chatter.post_message(host, rec, "Your order", subject="Books")
    [r] = sink.wait_for(1)
    assert r.rcpt_tos == ["anna@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in r.mail_options
    assert r.message["To"].addresses[0].addr_spec == "anna@xn--bcher-kva.example"
    assert r.message["To"].addresses[0].display_name == "Anna Müller"


def test_a_domain_that_is_no_valid_idn_is_refused_in_one_line(mail_host, cli_run):
    host = mail_host()
    result = cli_run(host, "partner", "add", "X", "x@bü_cher.example")
    assert result.exit_code != 0 and "not a valid email address" in result.stderr
