"""Routing after DATA over real sockets, in order: duplicate, bounce, reply, alias, reject.
Storage tests run on SQLite and PostgreSQL (`db_url`)."""
import pytest

from postroom.core import chatter, records
from postroom.core.models import Message, Notification, Partner, Record
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision, InboundOriginal
from tests.support.smtp import SMTPSink

from .conftest import message, transaction


def deliver(service, data, rcpts=("support@example.com",), mail_from="ann@client.test"):
    return transaction(service, mail_from, list(rcpts), data)[1]


def test_mail_to_an_alias_creates_a_record_with_the_mail_as_first_message(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic", defaults='{"priority": "high"}')
    ann = records.create_partner(host, "Ann", "ann@client.test")
    code, text = deliver(gateway(host), message(subject="Printer on fire", body="Help!"))
    assert code == 250 and text.decode().startswith("2.0.0 Ok: created generic,")
    record = Record.get(Record.name == "Printer on fire")
    assert record.values == {"priority": "high"}
    [first] = chatter.chatter(record)
    assert (first.message_type, first.author_id, first.message_id) == ("email", ann.id, "<m1@client.test>")
    assert "Help!" in first.body


def test_alias_with_a_fixed_record_posts_on_it(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    board = records.create_record(host, "generic", "Board")
    aliases.add_alias(host, "board", "generic", record_id=board.id)
    code, _ = deliver(gateway(host), message(subject="Minutes"), rcpts=["board@example.com"])
    assert code == 250
    assert [m.subject for m in chatter.chatter(board)] == ["Minutes"]
    assert Record.select().count() == 1


def test_a_reply_threads_onto_the_record_and_notifies_its_followers(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    record = records.create_record(host, "generic", "Website")
    bob = records.create_partner(host, "Bob", "bob@example.org")
    records.follow(host, record, bob)
    sent = chatter.post_message(host, record, "Draft attached", subject="Website")
    data = message(subject="Re: Website", body="Looks good", to="catchall@example.com",
                   message_id="<r1@client.test>",
                   headers={"In-Reply-To": sent.message_id, "References": sent.message_id})
    code, text = deliver(gateway(host), data, rcpts=["catchall@example.com"])
    assert code == 250 and f"posted on generic,{record.id}" in text.decode()
    reply = Message.get(Message.message_id == "<r1@client.test>")
    assert (reply.record_id, reply.parent_id, reply.message_type) == (record.id, sent.id, "email")
    assert [n.partner_id for n in Notification.select().where(Notification.message == reply)] == [bob.id]


def test_references_alone_thread_a_reply(inbound_host, gateway):
    host = inbound_host()
    record = records.create_record(host, "generic", "Website")
    sent = chatter.post_message(host, record, "Draft", subject="Website")
    data = message(to="catchall@example.com", message_id="<r2@client.test>",
                   headers={"References": f"<unknown@else.where> {sent.message_id}"})
    assert deliver(gateway(host), data, rcpts=["catchall@example.com"])[0] == 250
    assert Message.get(Message.message_id == "<r2@client.test>").record_id == record.id


def test_a_reply_to_a_mail_that_mail_queue_sent_threads_back(make_host, gateway):
    with SMTPSink() as sink:
        host = make_host(plugins=["mail_queue", "inbound"],
                         config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"})
        records.ensure_admin(host, "admin@example.com")
        record = records.create_record(host, "generic", "Quote 42")
        records.follow(host, record, records.create_partner(host, "Cy", "cy@customer.test"))
        chatter.post_message(host, record, "Here is the quote", subject="Quote 42")
        [out] = sink.wait_for(1)
    reply_to = out.message["Reply-To"]
    assert reply_to == "catchall@example.com"
    data = message(subject="Re: Quote 42", body="Accepted", sender="Cy <cy@customer.test>", to=reply_to,
                   message_id="<cy1@customer.test>", headers={"In-Reply-To": out.message_id})
    code, _ = deliver(gateway(host), data, rcpts=[reply_to], mail_from="cy@customer.test")
    assert code == 250
    posted = Message.get(Message.message_id == "<cy1@customer.test>")
    assert posted.record_id == record.id and posted.author.email_normalized == "cy@customer.test"


def test_mail_to_the_catchall_answering_nothing_is_refused_and_nothing_is_kept(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    data = message(to="catchall@example.com", headers={"In-Reply-To": "<never@sent.here>"})
    code, text = deliver(gateway(host), data, rcpts=["catchall@example.com"])
    assert code == 550 and text.decode().startswith("5.1.1 <catchall@example.com>")
    assert Message.select().count() == 0 and InboundOriginal.select().count() == 0
    assert InboundDecision.get().verdict == "refused"


def test_a_duplicate_message_id_is_accepted_and_nothing_is_created_twice(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    assert deliver(service, message())[0] == 250
    code, text = deliver(service, message())
    assert code == 250 and b"already received" in text
    assert Record.select().count() == 1 and Message.select().count() == 1
    assert [d.route for d in InboundDecision.select().order_by(InboundDecision.id)] == ["alias", "duplicate"]


def test_duplicate_comes_before_reply_and_bounce(inbound_host, gateway):
    host = inbound_host()
    record = records.create_record(host, "generic", "Website")
    sent = chatter.post_message(host, record, "Draft", subject="Website")
    # Our own mail coming back (same Message-Id) is a duplicate, never a new message.
    data = message(message_id=sent.message_id, sender="MAILER-DAEMON@relay.test",
                   headers={"In-Reply-To": sent.message_id})
    code, text = deliver(gateway(host), data, rcpts=["catchall@example.com"])
    assert code == 250 and b"already received" in text
    assert Message.select().count() == 1


def test_bounce_comes_before_reply(inbound_host, gateway):
    host = inbound_host()
    record = records.create_record(host, "generic", "Website")
    sent = chatter.post_message(host, record, "Draft", subject="Website")
    data = message(sender="MAILER-DAEMON@relay.test", message_id="<b1@relay.test>",
                   headers={"In-Reply-To": sent.message_id})
    code, text = deliver(gateway(host), data, rcpts=["catchall@example.com"], mail_from="")
    assert code == 250 and b"bounce" in text
    assert Message.select().count() == 1  # nothing posted


def test_reply_comes_before_alias(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    record = records.create_record(host, "generic", "Ticket 1")
    sent = chatter.post_message(host, record, "We are on it", subject="Ticket 1")
    data = message(subject="Re: Ticket 1", message_id="<r3@client.test>", headers={"In-Reply-To": sent.message_id})
    assert deliver(gateway(host), data)[0] == 250
    assert Record.select().count() == 1
    assert Message.get(Message.message_id == "<r3@client.test>").record_id == record.id


def test_partners_policy_refuses_unknown_senders_with_a_reason(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "staff", "generic", contact="partners")
    records.create_partner(host, "Ann", "ann@client.test")
    service = gateway(host)
    code, text = deliver(service, message(sender="eve@evil.test"), rcpts=["staff@example.com"])
    assert code == 550
    assert text.decode() == ("5.7.1 <staff@example.com>: eve@evil.test is not a known contact; "
                             "only known partners may write to staff")
    assert deliver(service, message(message_id="<m2@client.test>"), rcpts=["staff@example.com"])[0] == 250


def test_followers_policy_lets_only_followers_of_the_record_write(inbound_host, gateway):
    host = inbound_host()
    board = records.create_record(host, "generic", "Board")
    aliases.add_alias(host, "board", "generic", record_id=board.id, contact="followers")
    ann = records.create_partner(host, "Ann", "ann@client.test")
    records.create_partner(host, "Bob", "bob@client.test")
    records.follow(host, board, ann)
    service = gateway(host)
    code, text = deliver(service, message(sender="bob@client.test"), rcpts=["board@example.com"])
    assert code == 550 and f"does not follow generic,{board.id}" in text.decode()
    assert deliver(service, message(message_id="<m3@client.test>"), rcpts=["board@example.com"])[0] == 250


def test_a_normal_mail_from_a_partner_resets_its_bounce_counter(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    ann = records.create_partner(host, "Ann", "ann@client.test")
    Partner.update(message_bounce=3).where(Partner.id == ann.id).execute()
    assert deliver(gateway(host), message())[0] == 250
    assert Partner.get_by_id(ann.id).message_bounce == 0


def test_smtp_refuses_the_whole_message_when_one_recipient_is_refused(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    code, text = deliver(gateway(host), message(), rcpts=["support@example.com", "catchall@example.com"])
    assert code == 550 and b"catchall@example.com" in text
    assert Record.select().count() == 0 and InboundOriginal.select().count() == 0


class CampaignReplies:
    """Claims replies to a Message-Id it knows (as mail_marketing does for campaign mail)."""
    PLUGIN = PluginInfo("campaigns")

    def __init__(self):
        self.record = None
        self.calls = []

    @hookimpl(optionalhook=True)
    def postroom_inbound_reply(self, host, references, message, dry_run):
        self.calls.append((references, dry_run))
        return self.record if "<campaign-1@example.com>" in references else None


def test_a_plugin_threads_replies_to_mail_it_sent(inbound_host, gateway, cli_run):
    campaigns = CampaignReplies()
    host = inbound_host(extra=[campaigns])
    host.enable_plugin("campaigns")
    campaigns.record = records.create_record(host, "generic", "Spring campaign")
    data = message(to="catchall@example.com", message_id="<c1@client.test>",
                   headers={"In-Reply-To": "<campaign-1@example.com>"})
    assert deliver(gateway(host), data, rcpts=["catchall@example.com"])[0] == 250
    assert Message.get(Message.message_id == "<c1@client.test>").record_id == campaigns.record.id
    assert campaigns.calls == [(["<campaign-1@example.com>"], False)]
    result = cli_run(host, "route", "test", "catchall@example.com", "--in-reply-to", "<campaign-1@example.com>")
    assert "route: reply" in result.output and campaigns.calls[-1][1] is True


def test_lmtp_answers_each_recipient_after_data(inbound_host, gateway):
    import socket
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    aliases.add_alias(host, "staff", "generic", contact="partners")
    service = gateway(host, lmtp=True)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        f = sock.makefile("rb")

        def say(line):
            sock.sendall(line + b"\r\n")

        def reply():
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return lines
        assert reply()[0].startswith(b"220")
        say(b"LHLO client.test")
        assert reply()[-1].startswith(b"250")
        say(b"MAIL FROM:<eve@evil.test>")
        reply()
        for r in (b"support@example.com", b"staff@example.com"):
            say(b"RCPT TO:<" + r + b">")
            assert reply()[0].startswith(b"250")
        say(b"DATA")
        assert reply()[0].startswith(b"354")
        sock.sendall(message(sender="eve@evil.test", to="support@example.com") + b".\r\n")
        first, second = f.readline(), f.readline()
    assert first.startswith(b"250 2.0.0 Ok: created generic,")
    assert second.startswith(b"550 5.7.1 <staff@example.com>")
    assert Record.select().count() == 1


def test_originals_are_kept_and_exported_as_eml(inbound_host, gateway, cli_run, tmp_path, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    data = message(subject="Keep me")
    assert deliver(gateway(host), data)[0] == 250
    decision = InboundDecision.get(InboundDecision.verdict == "accepted")
    out = tmp_path / "mail.eml"
    result = cli_run(host, "inbound", "export", decision.id, "--output", out)
    assert result.exit_code == 0, result.output
    # The original as received, under the Authentication-Results line the gateway added.
    first, rest = out.read_bytes().split(b"\r\n", 1)
    assert first.startswith(b"Authentication-Results: example.com; spf=") and rest == data


@pytest.mark.parametrize("headers", [{"Auto-Submitted": "auto-replied"}, {"Precedence": "bulk"},
                                     {"Precedence": "list"}, {"X-Autoreply": "yes"},
                                     {"Return-Path": "<bounce+n7-abcdefabcdefabcd@example.com>"}])
def test_auto_replies_are_recorded_without_notifying_anyone(inbound_host, gateway, headers):
    host = inbound_host()
    record = records.create_record(host, "generic", "Website")
    records.follow(host, record, records.create_partner(host, "Bob", "bob@example.org"))
    sent = chatter.post_message(host, record, "Draft", subject="Website")
    data = message(message_id="<auto@client.test>", headers={"In-Reply-To": sent.message_id, **headers})
    assert deliver(gateway(host), data, rcpts=["catchall@example.com"])[0] == 250
    auto = Message.get(Message.message_id == "<auto@client.test>")
    assert auto.record_id == record.id and auto.is_internal
    assert Notification.select().where(Notification.message == auto).count() == 0


def test_an_auto_reply_never_opens_a_record(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    code, text = deliver(gateway(host), message(headers={"Auto-Submitted": "auto-replied"}))
    assert code == 550 and b"5.7.1" in text and b"loop protection" in text
    assert Record.select().count() == 0


def test_one_mail_to_two_aliases_opens_two_records(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    aliases.add_alias(host, "sales", "generic")
    code, _ = deliver(gateway(host), message(subject="Both"), rcpts=["support@example.com", "sales@example.com"])
    assert code == 250
    assert Record.select().where(Record.name == "Both").count() == 2
    assert sorted(m.message_id for m in Message.select()) == ["<m1.route2@client.test>", "<m1@client.test>"]
    assert InboundOriginal.select().count() == 1


def test_a_mail_without_message_id_is_stored_with_one_of_ours(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    assert deliver(gateway(host), message(message_id=None))[0] == 250
    assert Message.get().message_id.endswith("@example.com>")


class ExplodingReply:
    PLUGIN = PluginInfo("exploding")

    @hookimpl(optionalhook=True)
    def postroom_inbound_reply(self, host, references, message, dry_run):
        raise RuntimeError("plugin bug")


def test_a_plugin_failure_after_data_defers_the_mail_per_recipient_in_lmtp(inbound_host, gateway):
    import socket
    host = inbound_host(extra=[ExplodingReply()])
    host.enable_plugin("exploding")
    service = gateway(host, lmtp=True)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"LHLO c.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<catchall@example.com>\r\nRCPT TO:<postmaster@example.com>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(message(headers={"In-Reply-To": "<x@y.test>"}) + b".\r\n")
        assert [f.readline()[:9] for _ in range(2)] == [b"451 4.3.0", b"451 4.3.0"]
        sock.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")


def test_a_normal_mail_to_the_catchall_resets_the_counter_even_when_refused(inbound_host, gateway):
    host = inbound_host()
    ann = records.create_partner(host, "Ann", "ann@client.test")
    Partner.update(message_bounce=2).where(Partner.id == ann.id).execute()
    code, _ = deliver(gateway(host), message(to="catchall@example.com"), rcpts=["catchall@example.com"])
    assert code == 550
    assert Partner.get_by_id(ann.id).message_bounce == 0


def test_a_bounce_or_auto_reply_does_not_reset_the_counter(inbound_host, gateway):
    host = inbound_host()
    ann = records.create_partner(host, "Ann", "ann@client.test")
    Partner.update(message_bounce=2).where(Partner.id == ann.id).execute()
    service = gateway(host)
    deliver(service, message(headers={"Auto-Submitted": "auto-replied"}), rcpts=["catchall@example.com"])
    deliver(service, message(message_id="<b@x.test>"), rcpts=["bounce@example.com"])
    assert Partner.get_by_id(ann.id).message_bounce == 2


def test_a_reply_costs_the_same_statements_for_5_or_500_followers(inbound_host, gateway, clock):
    from postroom.core.models import Follower
    host = inbound_host(inbound_workers=1)  # one pool thread, connected by the warm-up below
    service = gateway(host)
    deliver(service, message(message_id="<warm-up@client.test>"), rcpts=["catchall@example.com"])
    costs = []
    for size in (5, 500):
        record = records.create_record(host, "generic", f"{size} followers")
        now = clock.now()
        with host.transaction():
            Partner.insert_many([{"name": f"P{size}.{i}", "email": f"p{size}.{i}@example.org",
                                  "email_normalized": f"p{size}.{i}@example.org", "created_at": now}
                                 for i in range(size)]).execute()
            Follower.insert_from(Partner.select(record.id, Partner.id)
                                 .where(Partner.email_normalized.startswith(f"p{size}.")),
                                 [Follower.record, Follower.partner]).execute()
        sent = chatter.post_message(host, record, "Hello", subject="Hi")
        before = host.db.statements
        data = message(message_id=f"<cost{size}@client.test>", headers={"In-Reply-To": sent.message_id})
        assert deliver(service, data, rcpts=["catchall@example.com"])[0] == 250
        costs.append(host.db.statements - before)
        assert Notification.select().where(
            Notification.message == Message.get(Message.message_id == f"<cost{size}@client.test>")).count() == size
    assert costs[0] == costs[1]


def test_the_same_mail_delivered_twice_at_once_is_stored_once(inbound_host, gateway, db_url):
    import threading
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    for round_ in range(5):
        start = threading.Barrier(2)
        codes = []

        def send():
            start.wait()
            codes.append(deliver(service, message(message_id=f"<twice{round_}@client.test>"))[0])
        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes == [250, 250]
        assert Message.select().where(Message.message_id == f"<twice{round_}@client.test>").count() == 1
    assert Record.select().count() == 5


def test_mail_about_a_record_with_an_alias_carries_the_alias_as_reply_to_and_the_reply_threads(
        make_host, gateway):
    with SMTPSink() as sink:
        host = make_host(plugins=["mail_queue", "inbound"],
                         config={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3"})
        records.ensure_admin(host, "admin@example.com")
        board = records.create_record(host, "generic", "Bördé \"12\"")
        aliases.add_alias(host, "board", "generic", record_id=board.id)
        records.follow(host, board, records.create_partner(host, "Cy", "cy@customer.test"))
        chatter.post_message(host, board, "Agenda", subject="Meeting")
        [out] = sink.wait_for(1)
    [reply_to] = out.message["Reply-To"].addresses
    assert (reply_to.addr_spec, reply_to.display_name) == ("board@example.com", "Bördé 12")
    data = message(subject="Re: Meeting", sender="cy@customer.test", to="board@example.com",
                   message_id="<cy2@customer.test>", headers={"In-Reply-To": out.message_id})
    assert deliver(gateway(host), data, rcpts=["board@example.com"])[0] == 250
    assert Message.get(Message.message_id == "<cy2@customer.test>").parent.message_id == out.message_id
