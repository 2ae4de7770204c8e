"""The gateway's writer stores several messages per transaction, each answered only after
the commit; one message's failure is its own (the batch is then stored again, a savepoint
per message), a database error fails the batch (the gateway answers those 451)."""
import logging
import threading
import time

import peewee as pw
import pytest

from postroom.core import records
from postroom.core.models import Record
from postroom.plugins.inbound.writer import GroupWriter


def _batch(host, writer, jobs):
    """Submit `jobs` so that they form one batch: the writer is held on a first job until
    all of them are queued."""
    release = threading.Event()
    writer.submit(lambda: release.wait(10))
    futures = [writer.submit(job) for job in jobs]
    release.set()
    return futures


def _names():
    return sorted(r.name for r in Record.select())


def test_a_failing_message_rolls_back_alone_and_the_others_are_committed(inbound_host, db_url):
    host = inbound_host(db_url=db_url)
    writer = GroupWriter(host)
    notified = []

    def store(name, fail=False):
        def job():
            records.create_record(host, "generic", name)
            host.after_commit(lambda: notified.append(name))
            if fail:
                raise ValueError(f"{name} cannot be stored")
            return name
        return job
    try:
        futures = _batch(host, writer, [store("a"), store("b", fail=True), store("c")])
        assert futures[0].result(timeout=10) == "a"
        with pytest.raises(ValueError, match="b cannot be stored"):
            futures[1].result(timeout=10)
        assert futures[2].result(timeout=10) == "c"
        # Read on this thread's own connection: what was answered is committed.
        assert _names() == ["a", "c"]
        assert sorted(notified) == ["a", "c"]  # b's after-commit work was rolled back with it
    finally:
        writer.close()


def test_a_database_error_fails_every_message_of_its_batch_and_stores_none(inbound_host, db_url):
    host = inbound_host(db_url=db_url)
    writer = GroupWriter(host)

    def good():
        records.create_record(host, "generic", "kept?")
        return "ok"

    def broken():  # what a dropped connection or a failed disk raises, on either engine
        raise pw.OperationalError("server closed the connection unexpectedly")
    try:
        futures = _batch(host, writer, [good, broken, good])
        for future in futures:
            with pytest.raises(pw.OperationalError):
                future.result(timeout=10)
        assert _names() == []
        # The writer goes on with the next batch on a fresh connection.
        assert writer.submit(good).result(timeout=10) == "ok"
        assert _names() == ["kept?"]
    finally:
        writer.close()


def test_a_batch_without_failures_takes_no_savepoint_per_message(inbound_host, db_url):
    host = inbound_host(db_url=db_url)
    writer = GroupWriter(host)
    sql = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: sql.append(str(record.msg[0]) if isinstance(record.msg, tuple) else "")
    logger, level = logging.getLogger("peewee"), logging.getLogger("peewee").level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def store(name):
        def job():  # writes without a transaction of its own: what SAVEPOINTs run are the writer's
            Record.create(model="generic", name=name, created_at=host.clock.now())
            return name
        return job
    try:
        futures = _batch(host, writer, [store(n) for n in "abc"])
        assert [f.result(timeout=10) for f in futures] == ["a", "b", "c"]
    finally:
        writer.close()
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert _names() == ["a", "b", "c"]
    assert [s for s in sql if s.startswith("SAVEPOINT")] == []


def _two_stores(host, writer, gap):
    """Submit two stores `gap` seconds apart and wait for both answers."""
    def store(name):
        return lambda: Record.create(model="generic", name=name, created_at=host.clock.now()).name
    a = writer.submit(store("first"))
    threading.Event().wait(gap)
    b = writer.submit(store("second"))
    assert (a.result(timeout=10), b.result(timeout=10)) == ("first", "second")
    assert _names() == ["first", "second"]


def test_with_a_commit_delay_a_message_a_moment_behind_joins_the_batch_and_waits_no_longer(inbound_host):
    host = inbound_host()
    commits = []
    writer = GroupWriter(host, delay=1.0)
    inner = writer._commit
    writer._commit = lambda batch: (commits.append(len(batch)), inner(batch))
    try:
        _two_stores(host, writer, 0.05)
        assert commits == [2]  # one transaction for both
        # A lone message waits the delay once, then is stored: a second wait would make it 2 s.
        started = time.monotonic()
        assert writer.submit(lambda: "alone").result(timeout=10) == "alone"
        assert 0.9 < time.monotonic() - started < 1.9
        assert commits == [2, 1]
    finally:
        writer.close()


def test_without_a_commit_delay_the_writer_stores_at_once(inbound_host):
    host = inbound_host()
    commits = []
    writer = GroupWriter(host)
    inner = writer._commit
    writer._commit = lambda batch: (commits.append(len(batch)), inner(batch))
    try:
        _two_stores(host, writer, 0.3)
        assert commits == [1, 1]
    finally:
        writer.close()


def test_with_nobody_on_the_way_the_writer_stores_at_once_whatever_its_delay(inbound_host):
    host = inbound_host()
    writer = GroupWriter(host, delay=30.0, expecting=lambda: 0)
    try:
        # Within 5 s of a 30 s delay: it did not wait for a message nobody is sending.
        assert writer.submit(lambda: "alone").result(timeout=5) == "alone"
    finally:
        writer.close()


def test_the_writer_waits_for_each_message_on_its_way_and_stores_them_together(inbound_host):
    host = inbound_host()
    on_the_way, commits = [3], []
    writer = GroupWriter(host, delay=30.0, expecting=lambda: on_the_way[0])
    inner = writer._commit
    writer._commit = lambda batch: (commits.append(len(batch)), inner(batch))

    def store(name):
        on_the_way[0] -= 1  # handed over, as the gateway counts it
        return writer.submit(lambda: Record.create(model="generic", name=name, created_at=host.clock.now()).name)
    try:
        futures = []
        for name in ("a", "b", "c"):  # a moment apart: each is on its way while the writer waits
            futures.append(store(name))
            threading.Event().wait(0.1)
        assert [f.result(timeout=5) for f in futures] == ["a", "b", "c"]  # not after 30 s
        assert commits == [3]
        assert _names() == ["a", "b", "c"]
    finally:
        writer.close()


def test_a_message_that_never_comes_holds_the_batch_one_delay_in_all(inbound_host):
    host = inbound_host()
    commits = []
    writer = GroupWriter(host, delay=1.0, expecting=lambda: 1)  # one session that stays silent
    inner = writer._commit
    writer._commit = lambda batch: (commits.append(len(batch)), inner(batch))
    try:
        started = time.monotonic()
        first = writer.submit(lambda: "first")
        threading.Event().wait(0.4)
        second = writer.submit(lambda: "second")
        assert (first.result(timeout=10), second.result(timeout=10)) == ("first", "second")
        # One delay from the first wait, not a fresh one after the second message (1.4 s).
        assert 0.9 < time.monotonic() - started < 1.35
        assert commits == [2]
    finally:
        writer.close()


def test_on_sqlite_the_writer_copies_the_log_back_after_answering_and_it_stays_small(inbound_host):
    """The writer's connection never checkpoints inside a COMMIT (its clients would wait
    for it); it checkpoints after answering, every few batches, so the write-ahead log is
    reset and stays a few batches long however many it stores.

    Each batch's future is settled before the writer decides whether to checkpoint, so the
    next submission may already wait there: the writer then puts the checkpoint off, up to
    four times `every` (16) batches. The bound allows that worst case (64 batches of about
    three pages each), and 200 batches without the writer's checkpoints leave about 600."""
    host = inbound_host()
    writer = GroupWriter(host)
    try:
        for i in range(200):  # each alone
            writer.submit(lambda i=i: records.create_record(host, "generic", f"r{i}" + "x" * 400)).result(timeout=10)
        autocheckpoint = writer.submit(
            lambda: host.db.execute_sql("PRAGMA wal_autocheckpoint").fetchall()[0][0]).result(timeout=10)
    finally:
        writer.close()
    assert autocheckpoint == 0  # no checkpoint inside the writer's commits
    assert Record.select().count() == 200
    # Frames in the log now: without the writer's own checkpoints, all 200 batches' pages.
    busy, frames, _ = host.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    assert busy == 0 and frames < 4 * 16 * 4, frames


def test_the_gateway_counts_a_session_on_its_way_from_mail_from_until_its_transaction_ends(
        inbound_host, gateway):
    """What the writer waits for (`expecting`): every way a transaction ends takes it off
    the count, so a batch never waits for a session that has nothing more to hand over."""
    from postroom.plugins.inbound import aliases

    from tests.support.waiting import wait_until

    from .conftest import Raw, message

    host = inbound_host(inbound_max_size=2000)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    handler = service.controller.handler

    def begin(session):
        assert session.cmd(b"EHLO client.test").startswith(b"250")
        assert session.cmd(b"MAIL FROM:<ann@client.test>").startswith(b"250")
        assert session.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")

    stored, reset, gone, too_big = (Raw(service.port) for _ in range(4))
    try:
        for session in (stored, reset, gone, too_big):
            begin(session)
        assert handler.on_their_way == 4
        assert stored.cmd(b"DATA").startswith(b"354")
        stored.sock.sendall(message() + b".\r\n")
        assert stored.reply().startswith(b"250")
        assert handler.on_their_way == 3
        assert reset.cmd(b"RSET").startswith(b"250")
        assert handler.on_their_way == 2
        assert too_big.cmd(b"DATA").startswith(b"354")
        too_big.sock.sendall((b"x" * 70 + b"\r\n") * 40 + b".\r\n")
        assert too_big.reply().startswith(b"552")
        assert handler.on_their_way == 1
        gone.close()
        wait_until(lambda: handler.on_their_way == 0, timeout=10, interval=0.02,
                   what="the session that went away to leave the count")
        begin(stored)  # a new transaction on the same session counts again, once
        assert stored.cmd(b"MAIL FROM:<bob@client.test>").startswith(b"503")  # nested: refused
        assert handler.on_their_way == 1
    finally:
        for session in (stored, reset, too_big):
            session.close()
    wait_until(lambda: handler.on_their_way == 0, timeout=10, interval=0.02, what="every session to leave the count")
    assert Record.select().count() == 1
