"""`db.pipeline()`: statements go out without waiting (PostgreSQL), answers read when asked.

On SQLite the block is plain, so every test here runs on both engines and must give the
same answers on each; on PostgreSQL the tests also pin that the block was pipelined.
"""
import peewee as pw
import pytest

from postroom.core.db import insert_rows_later, is_postgres, rows_later, select_all_later
from postroom.core.models import Partner, Record


def _record_rows(n, now):
    return [("lead", f"pipelined {i}", None, now) for i in range(n)]


def test_answers_read_later_are_those_of_their_own_statements_in_order(make_host, db_url):
    host = make_host(db_url=db_url)
    db, now = host.db, host.clock.now()
    fields = [Record.model, Record.name, Record.values, Record.created_at]
    with db.pipeline(), host.transaction():
        assert db.pipelined == is_postgres(db)
        first = insert_rows_later(db, Record, fields, _record_rows(3, now), returning_ids=True)
        second = insert_rows_later(db, Record, fields, _record_rows(2, now), returning_ids=True)
        count = rows_later(db, 'SELECT COUNT(*) FROM "record" WHERE "name" LIKE %s' % db.param, ["pipelined %"])
        nobody = select_all_later(Partner, 'SELECT * FROM "partner" WHERE "email_normalized" = {p}', ["x@y.test"])
        a, b = first(), second()
        assert count() == [(5,)]
        assert nobody() == []
    assert len(set(a + b)) == 5 and a == sorted(a) and b == sorted(b) and max(a) < min(b)
    names = dict(Record.select(Record.id, Record.name).where(Record.id.in_(a + b)).tuples())
    assert [names[i] for i in a + b] == [f"pipelined {i}" for i in range(3)] + [f"pipelined {i}" for i in range(2)]
    assert not db.pipelined


def test_a_failing_pipelined_statement_rolls_the_transaction_back_and_skips_after_commit_work(make_host, db_url):
    host = make_host(db_url=db_url)
    db, now = host.db, host.clock.now()
    ran = []
    fields = [Record.model, Record.name, Record.values, Record.created_at]
    with pytest.raises(pw.IntegrityError):
        with db.pipeline(), host.transaction():
            host.after_commit(lambda: ran.append("committed"))
            insert_rows_later(db, Record, fields, _record_rows(1, now))
            # NOT NULL broken: on PostgreSQL the error is only known once answers are read.
            db.execute_sql('INSERT INTO "record" ("model", "name", "created_at") VALUES (%s, NULL, %s)'
                           % (db.param, db.param), ["lead", Record.created_at.db_value(now)])
    assert ran == []
    assert not db.pipelined
    assert Record.select().where(Record.name == "pipelined 0").count() == 0
    # The connection is usable again, outside a pipeline and in a new one.
    assert db.execute_sql("SELECT 1").fetchall() == [(1,)]
    with db.pipeline(), host.transaction():
        insert_rows_later(db, Record, fields, _record_rows(1, now))
    assert Record.select().where(Record.name == "pipelined 0").count() == 1


def test_a_commit_that_fails_in_a_pipeline_raises_before_after_commit_work(make_host, pg_database):
    """A deferred constraint fails at COMMIT, the pipeline's last statement: the commit
    must wait for its answer, or work meant for committed rows would run for none."""
    host = make_host(db_url=pg_database)
    db = host.db
    db.execute_sql('CREATE TABLE "deferred_ref" ("id" INTEGER PRIMARY KEY, "ref" INTEGER '
                   'REFERENCES "deferred_ref" ("id") DEFERRABLE INITIALLY DEFERRED)')
    ran = []
    with pytest.raises(pw.IntegrityError):
        with db.pipeline(), host.transaction():
            host.after_commit(lambda: ran.append("committed"))
            db.execute_sql('INSERT INTO "deferred_ref" VALUES (1, 99)')
    assert ran == []
    assert db.execute_sql('SELECT COUNT(*) FROM "deferred_ref"').fetchall() == [(0,)]


def test_after_end_pipeline_a_cursor_knows_its_rowcount_again(make_host, db_url):
    """Code not written for a pipeline (a hook, routing.store) runs after `end_pipeline`."""
    host = make_host(db_url=db_url)
    db, now = host.db, host.clock.now()
    fields = [Record.model, Record.name, Record.values, Record.created_at]
    with db.pipeline(), host.transaction():
        insert_rows_later(db, Record, fields, _record_rows(2, now))
        db.end_pipeline()
        assert not db.pipelined
        cursor = db.execute_sql('UPDATE "record" SET "name" = %s WHERE "name" LIKE %s' % (db.param, db.param),
                                ["renamed", "pipelined %"])
        assert cursor.rowcount == 2
