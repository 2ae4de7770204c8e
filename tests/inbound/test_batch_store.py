"""The writer stores a batch of common messages (alias mail that opens a record) set-based:
the same rows as storing them one by one, in a number of statements that does not grow
with the batch, and a message whose insert fails is answered 4xx alone while the others
of its batch are stored once and answered 250. Real SMTP, real databases, both engines;
the writer is held on a first job so that the messages form one batch."""
import smtplib
import threading
import time

import pytest

from postroom import hookimpl
from postroom.core import records
from postroom.core.models import Follower, Message, Partner, Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision, InboundOriginal

from .conftest import message


def _one_batch(service, mails):
    """Send `mails` [(mail_from, rcpt, bytes)] on concurrent sessions while the writer is
    held, so that all of them reach it as one batch; returns the DATA replies in order and
    how many statements the batch took once released."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        holding.set()
        release.wait(20)
    service.writer.submit(hold)
    # Sent only once the writer holds: a message queued before it took the first job
    # would join that job's batch and never count as waiting.
    assert holding.wait(10), "the writer did not start"
    replies = [None] * len(mails)

    def send(i, mail_from, rcpt, data):
        with smtplib.SMTP("127.0.0.1", service.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail(mail_from)
            client.rcpt(rcpt)
            try:
                replies[i] = client.data(data)
            except smtplib.SMTPResponseException as exc:
                replies[i] = (exc.smtp_code, exc.smtp_error)
    threads = [threading.Thread(target=send, args=(i, *m)) for i, m in enumerate(mails)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while service.writer.queued() < len(mails):  # every message parsed and waiting
        assert time.monotonic() < deadline, "the messages did not reach the writer"
        time.sleep(0.01)
    before = service.host.db.statements
    release.set()
    for t in threads:
        t.join(30)
    return [(code, text.decode() if isinstance(text, bytes) else text) for code, text in replies], \
        service.host.db.statements - before


def _mail(i, sender="Ann <ann@client.test>", **kwargs):
    kwargs.setdefault("message_id", f"<b{i}@client.test>")
    return message(subject=f"Request {i}", sender=sender, **kwargs)


def test_a_batch_of_common_messages_stores_each_once_with_its_partner_follower_original_and_decision(
        inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    mails = [("ann@client.test", "support@example.com", _mail(i)) for i in range(3)]
    mails.append(("bob@client.test", "support@example.com", _mail(3, sender="Bob <bob@client.test>")))
    replies, _ = _one_batch(service, mails)
    assert [code for code, _ in replies] == [250] * 4
    assert all("created generic," in text for _, text in replies)
    # One partner per new sender, however many of its mails the batch held.
    assert sorted(p.email_normalized for p in Partner.select().where(Partner.email_normalized.endswith("client.test"))) \
        == ["ann@client.test", "bob@client.test"]
    created = {r.name: r for r in Record.select()}
    assert sorted(created) == [f"Request {i}" for i in range(4)]
    for i in range(4):
        posted = Message.get(Message.message_id == f"<b{i}@client.test>")
        assert posted.record_id == created[f"Request {i}"].id and posted.message_type == "email"
        assert posted.author.email_normalized == ("bob@client.test" if i == 3 else "ann@client.test")
        assert Follower.select().where((Follower.record == posted.record_id)
                                       & (Follower.partner == posted.author_id)).count() == 1
        assert InboundOriginal.select().where(InboundOriginal.message_id == f"<b{i}@client.test>").count() == 1
        decision = InboundDecision.get(InboundDecision.message_id == f"<b{i}@client.test>")
        assert (decision.verdict, decision.route, decision.code, decision.counts) == ("accepted", "alias", 250, True)
        assert (decision.model, decision.res_id) == ("generic", posted.record_id)
        assert InboundOriginal.get_by_id(decision.original_id).message_id == f"<b{i}@client.test>"


def test_a_batch_takes_as_many_statements_for_eight_common_messages_as_for_two(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    records.create_partner(host, "Ann", "ann@client.test")
    service = gateway(host)
    _, two = _one_batch(service, [("ann@client.test", "support@example.com", _mail(i)) for i in range(2)])
    _, eight = _one_batch(service, [("ann@client.test", "support@example.com", _mail(i)) for i in range(2, 10)])
    assert Record.select().count() == 10
    assert eight == two


def test_duplicates_replies_and_refusals_in_a_batch_are_answered_as_one_by_one(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    aliases.add_alias(host, "members", "generic", contact="partners")
    service = gateway(host)
    first, _ = _one_batch(service, [("ann@client.test", "support@example.com", _mail(0))])
    thread = Message.get(Message.message_id == "<b0@client.test>")
    ours = records.create_record(host, "generic", "Ours")
    from postroom.core import chatter
    sent = chatter.post_message(host, ours, "We wrote", subject="Ours")
    mails = [
        ("ann@client.test", "support@example.com", _mail(0)),       # stored before: a duplicate
        ("ann@client.test", "support@example.com", _mail(1)),       # common
        ("ann@client.test", "support@example.com", _mail(1)),       # the same Message-Id again
        ("cy@client.test", "members@example.com", _mail(2, sender="Cy <cy@client.test>")),  # not a partner
        ("ann@client.test", "support@example.com",
         _mail(3, headers={"In-Reply-To": sent.message_id})),        # a reply to our message
    ]
    replies, _ = _one_batch(service, mails)
    codes = [code for code, _ in replies]
    assert codes == [250, 250, 250, 550, 250]
    assert "already received" in replies[0][1]
    # The two sessions sending <b1> reach the writer in either order: one of them is stored.
    assert sorted("created generic," in text for _, text in replies[1:3]) == [False, True]
    assert any("already received" in text for _, text in replies[1:3])
    assert "not a known contact" in replies[3][1]
    assert "as a reply" in replies[4][1]
    assert Message.select().where(Message.message_id == "<b1@client.test>").count() == 1
    assert Message.get(Message.message_id == "<b3@client.test>").record_id == ours.id
    assert thread.record_id != ours.id and first[0][0] == 250
    assert not Partner.select().where(Partner.email_normalized == "cy@client.test").exists()


def _poison(host, db_url, table="record", column="name", value="Poison"):
    """A real insert failure for one value of `table`'s `column` (a trigger), on either engine."""
    if db_url.startswith("sqlite"):
        host.db.execute_sql(f"CREATE TRIGGER poison BEFORE INSERT ON {table} WHEN NEW.{column} = '{value}' "
                            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    else:
        host.db.execute_sql("CREATE OR REPLACE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                            f"IF NEW.{column} = '{value}' THEN RAISE EXCEPTION 'poisoned row' "
                            "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
        host.db.execute_sql(f"CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison()")


def test_a_message_whose_insert_fails_gets_4xx_and_the_others_of_its_batch_are_stored_once_with_250(
        inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    _poison(host, db_url)
    service = gateway(host)
    mails = [("ann@client.test", "support@example.com", _mail(i)) for i in range(2)]
    mails.insert(1, ("ann@client.test", "support@example.com",
                     message(subject="Poison", sender="Ann <ann@client.test>", message_id="<poison@client.test>")))
    mails.append(("ann@client.test", "support@example.com", _mail(2)))
    replies, _ = _one_batch(service, mails)
    assert [code for code, _ in replies] == [250, 451, 250, 250]
    for i in range(3):
        assert Message.select().where(Message.message_id == f"<b{i}@client.test>").count() == 1
        assert InboundOriginal.select().where(InboundOriginal.message_id == f"<b{i}@client.test>").count() == 1
        assert InboundDecision.select().where(InboundDecision.message_id == f"<b{i}@client.test>").count() == 1
    assert not Message.select().where(Message.message_id == "<poison@client.test>").exists()
    assert not InboundOriginal.select().where(InboundOriginal.message_id == "<poison@client.test>").exists()
    assert sorted(r.name for r in Record.select()) == ["Request 0", "Request 1", "Request 2"]


def test_a_failure_in_a_write_whose_answer_nobody_reads_still_fails_only_its_own_message(inbound_host, gateway, db_url):
    """The decision rows' INSERT is one whose answer nobody asks for: on PostgreSQL,
    pipelined, its error is known only at the next answer read or when the pipeline ends.
    It must still arrive inside the batch, not at its COMMIT (which would fail the whole
    batch with 451), so the batch is stored again message by message and only the
    poisoned one gets 451."""
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    _poison(host, db_url, "inbound_decision", "message_id", "<poison@client.test>")
    service = gateway(host)
    mails = [("ann@client.test", "support@example.com", _mail(i)) for i in range(3)]
    mails.insert(2, ("ann@client.test", "support@example.com",
                     message(subject="Poison", sender="Ann <ann@client.test>", message_id="<poison@client.test>")))
    replies, _ = _one_batch(service, mails)
    assert [code for code, _ in replies] == [250, 250, 451, 250]
    for i in range(3):
        assert Message.select().where(Message.message_id == f"<b{i}@client.test>").count() == 1
        assert InboundDecision.select().where(InboundDecision.message_id == f"<b{i}@client.test>").count() == 1
    assert not Message.select().where(Message.message_id == "<poison@client.test>").exists()
    assert not InboundOriginal.select().where(InboundOriginal.message_id == "<poison@client.test>").exists()
    assert sorted(r.name for r in Record.select()) == ["Request 0", "Request 1", "Request 2"]


@pytest.mark.parametrize("lmtp", [False, True])
def test_lmtp_and_smtp_answer_every_recipient_of_a_common_message(inbound_host, gateway, db_url, lmtp):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host, lmtp=lmtp)
    client = (smtplib.LMTP if lmtp else smtplib.SMTP)("127.0.0.1", service.port)
    client.sock.settimeout(30)
    try:
        client.ehlo("client.test")  # LHLO for LMTP
        assert client.mail("ann@client.test")[0] == 250
        assert client.rcpt("support@example.com")[0] == 250
        assert client.rcpt("SUPPORT@example.com")[0] == 250  # the same alias: one record
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(smtplib.quotedata(_mail(7).decode()).encode() + b"\r\n.\r\n")
        replies = [client.getreply() for _ in range(2 if lmtp else 1)]  # LMTP: one per recipient
    finally:
        client.close()
    assert [code for code, _ in replies] == [250] * len(replies)
    assert all(b"created generic," in text for _, text in replies)
    assert Record.select().count() == 1
    assert InboundDecision.get(InboundDecision.message_id == "<b7@client.test>").recipients == "support@example.com"


class _RoutedRecorder:
    """Records the hooks the batch path calls for each message (none is implemented by the
    inbound plugin itself, so the batch skips them until a plugin like this one comes)."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def postroom_record_created(self, host, record, values):
        self.calls.append(("created", record.id))

    @hookimpl
    def postroom_message_posted(self, host, message, notified):
        self.calls.append(("posted", message.record_id))

    @hookimpl
    def postroom_inbound_routed(self, host, route, message_id, record):
        self.calls.append(("routed", record.id, route, message_id))


def test_a_plugin_registered_while_the_gateway_runs_gets_each_batch_messages_hooks_once(
        inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    replies, _ = _one_batch(service, [("ann@client.test", "support@example.com", _mail(i)) for i in range(2)])
    assert [code for code, _ in replies] == [250] * 2
    recorder = _RoutedRecorder()
    host.pm.register(recorder)
    replies, _ = _one_batch(service, [("ann@client.test", "support@example.com", _mail(i)) for i in range(2, 5)])
    assert [code for code, _ in replies] == [250] * 3
    ids = {r.name: r.id for r in Record.select()}
    expected = sorted(ids[f"Request {i}"] for i in range(2, 5))  # the sessions race: any order
    assert sorted(rid for kind, rid, *_ in recorder.calls if kind == "created") == expected
    assert sorted(rid for kind, rid, *_ in recorder.calls if kind == "posted") == expected
    assert sorted((rid, route, mid) for kind, rid, route, mid in
                  (c for c in recorder.calls if c[0] == "routed")) == \
        sorted((ids[f"Request {i}"], "alias", f"<b{i}@client.test>") for i in range(2, 5))


def test_on_postgresql_a_batch_reads_only_its_records_followers_whatever_the_statistics(
        inbound_host, gateway, pg_database):
    """The batch's notifications are made from the followers of its messages' records,
    found through the follower index, not by hashing the whole follower table: with 60,000
    records, messages and followers and no statistics (autovacuum off, nothing analysed: a
    fresh database after a burst), the plain join's plan read every follower for every
    batch of eight."""
    host = inbound_host(db_url=pg_database)
    aliases.add_alias(host, "support", "generic")
    db = host.db
    for table in ("record", "follower", "message", "partner"):  # stay without statistics
        db.execute_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
    with host.transaction():
        db.execute_sql('INSERT INTO "partner" ("name", "email", "email_normalized", "notification_type", '
                       '"active", "message_bounce", "created_at") SELECT \'p\' || i, \'p\' || i || \'@bulk.test\', '
                       '\'p\' || i || \'@bulk.test\', \'email\', true, 0, now() FROM generate_series(1, 200) i')
        db.execute_sql('INSERT INTO "record" ("model", "name", "created_at") '
                       'SELECT \'generic\', \'r\' || i, now() FROM generate_series(1, 60000) i')
        db.execute_sql('INSERT INTO "follower" ("record_id", "partner_id") SELECT r."id", '
                       '(SELECT MIN("id") FROM "partner") + MOD(r."id", 200) FROM "record" r')
        db.execute_sql('INSERT INTO "message" ("record_id", "body", "message_type", "is_internal", "message_id", "created_at") '
                       'SELECT r."id", \'earlier\', \'comment\', false, \'<old\' || r."id" || \'@bulk.test>\', now() FROM "record" r')
    service = gateway(host)
    seen = []
    execute = db.execute_sql

    def spy(sql, params=None, *args, **kwargs):
        if sql.startswith('INSERT INTO "notification"'):
            seen.append((sql, params))
        return execute(sql, params, *args, **kwargs)
    db.execute_sql = spy
    try:
        replies, _ = _one_batch(service, [("ann@client.test", "support@example.com", _mail(i)) for i in range(8)])
    finally:
        db.execute_sql = execute
    assert [code for code, _ in replies] == [250] * 8
    assert seen, "the batch made no notifications statement"
    sql, params = seen[-1]
    plan = "\n".join(row[0] for row in execute("EXPLAIN " + sql, params).fetchall())
    assert "Seq Scan on follower" not in plan, plan
