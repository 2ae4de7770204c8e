"""core.db's hand-written set-based statements (insert_rows, values_present, update_ids) store
and find what peewee's own statements would, on both engines."""
import datetime as dt

import pytest

from postroom.core.db import CHUNK, SHARED_MIN_ROWS, built, insert_new_rows, insert_rows, update_ids, values_present
from postroom.core.models import Message, Partner, Record


def test_inserted_rows_read_back_as_given_when_they_share_times_and_flags(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    later = now + dt.timedelta(hours=1, microseconds=7)
    fields = [Partner.name, Partner.email, Partner.message_bounce, Partner.active, Partner.created_at,
              Partner.notification_type]
    # The same datetime object on most rows, an equal one in another time zone, a naive UTC
    # one, a distinct one; flags given as bools and as ints; a name given as a number.
    paris = now.astimezone(dt.timezone(dt.timedelta(hours=1)))
    rows = [(f"P{i}", f"p{i}@example.com", i % 3, bool(i % 2), now, "email") for i in range(CHUNK + 20)]
    rows += [("Paris", None, 0, 1, paris, "email"), ("Naive", None, 0, 0, later.replace(tzinfo=None), "inbox"),
             (12345, "n@example.com", 5, True, later, "email")]
    with host.transaction():
        ids = insert_rows(host.db, Partner, fields, rows, returning_ids=True)
    got = {p.id: p for p in Partner.select().where(Partner.id.in_(ids))}
    assert len(got) == len(rows)
    for i, row in zip(ids, rows):
        p = got[i]
        assert (p.name, p.email, p.message_bounce, p.active, p.notification_type) \
            == (str(row[0]), row[1], row[2], bool(row[3]), row[5])
        expected = row[4] if row[4].tzinfo else row[4].replace(tzinfo=dt.timezone.utc)
        assert p.created_at == expected and p.created_at.tzinfo is not None


def test_inserted_json_documents_are_each_their_own(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    shared = {"b": 1, "a": [1, 2]}
    rows = [("t", "one", shared, now), ("t", "two", shared, now), ("t", "three", {"x": "y"}, now),
            ("t", "four", None, now)]
    with host.transaction():
        ids = insert_rows(host.db, Record, [Record.model, Record.name, Record.values, Record.created_at],
                          rows, returning_ids=True)
    values = {r.id: r.values for r in Record.select().where(Record.id.in_(ids))}
    assert [values[i] for i in ids] == [shared, shared, {"x": "y"}, None]


def test_a_value_every_row_shares_is_stored_as_given_and_equal_values_of_other_types_too(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    paris = now.astimezone(dt.timezone(dt.timedelta(hours=1)))  # equal to now, another zone
    shared = {"b": 1}
    fields = [Partner.name, Partner.email, Partner.message_bounce, Partner.active, Partner.created_at,
              Partner.notification_type]
    # One chunk where every column but the name holds one value; then one where a column's
    # values are equal but of different types (1 and True, the same instant in two zones).
    same = [(f"S{i}", "s@example.com", 2, True, now, "email") for i in range(CHUNK)]
    mixed = [("M0", None, 1, True, now, "email"), ("M1", None, True, 1, paris, "email")]
    with host.transaction():
        ids = insert_rows(host.db, Partner, fields, same + mixed, returning_ids=True)
        doc_ids = insert_rows(host.db, Record, [Record.model, Record.name, Record.values, Record.created_at],
                              [("t", "one", shared, now), ("t", "two", shared, now)], returning_ids=True)
    got = {p.id: p for p in Partner.select().where(Partner.id.in_(ids))}
    for i, row in zip(ids, same + mixed):
        p = got[i]
        assert (p.name, p.email, p.message_bounce, p.active, p.notification_type) == \
            (row[0], row[1], int(row[2]), bool(row[3]), row[5])
        assert p.created_at == now and p.created_at.tzinfo is not None
    assert [r.values for r in Record.select().where(Record.id.in_(doc_ids)).order_by(Record.id)] == [shared, shared]


def test_a_time_inserted_set_based_is_stored_as_peewees_own_insert_stores_it(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    on_the_second = now.replace(microsecond=0)  # SQLite's text has no fraction then
    fields = [Partner.name, Partner.email_normalized, Partner.notification_type, Partner.message_bounce,
              Partner.active, Partner.created_at]
    with host.transaction():
        # Shared by a chunk, and one per row.
        ids = insert_rows(host.db, Partner, fields, [("S", None, "email", 0, True, now)] * SHARED_MIN_ROWS
                          + [(f"D{i}", None, "email", 0, True, t) for i, t in enumerate((now, on_the_second))],
                          returning_ids=True)
        by_peewee = [Partner.insert(name="P", notification_type="email", created_at=t).execute()
                     for t in [now] * (SHARED_MIN_ROWS + 1) + [on_the_second]]
    raw = dict(host.db.execute_sql('SELECT "id", "created_at" FROM "partner"').fetchall())
    assert [raw[i] for i in ids] == [raw[i] for i in by_peewee]


def test_chunks_whose_rows_share_values_are_stored_row_by_row_as_peewees_insert_stores_them(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    fields = [Partner.name, Partner.email, Partner.email_normalized, Partner.notification_type,
              Partner.message_bounce, Partner.active, Partner.created_at]
    # Every column shared (SQLite lists the first in VALUES all the same); most shared, a
    # NULL among them; nothing shared; too few rows to bind shared values once; one row alone.
    n = SHARED_MIN_ROWS
    chunks_of_rows = [[("Same", "s@example.com", "s@example.com", "email", 0, True, now)] * n,
                      [(f"N{i}", None, f"n{i}@example.com", "email", 1, False, now) for i in range(n + 1)],
                      [(f"V{i}", f"v{i}@x.test", None, ("email", "inbox")[i % 2], i, bool(i % 2),
                        now + dt.timedelta(seconds=i)) for i in range(n)],
                      [(f"F{i}", None, f"f{i}@example.com", "email", 1, False, now) for i in range(n - 1)],
                      [("One", None, None, "inbox", 3, True, now)]]
    names = [f.name for f in fields]
    for rows in chunks_of_rows:
        with host.transaction():
            ids = insert_rows(host.db, Partner, fields, rows, returning_ids=True)
            theirs = [Partner.insert(**dict(zip(names, row))).execute() for row in rows]
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        raw = {r[0]: r[1:] for r in host.db.execute_sql(f'SELECT "id", {columns} FROM "partner"').fetchall()}
        assert [raw[i] for i in ids] == [raw[i] for i in theirs]
        assert [raw[i][0] for i in ids] == [row[0] for row in rows]  # each id names its own row


# Every NOT NULL column of a partner (a hand-written INSERT has no peewee defaults).
FIELDS = [Partner.name, Partner.email_normalized, Partner.notification_type, Partner.message_bounce,
          Partner.active, Partner.created_at]


def _partners(host, names_and_addresses) -> list[int]:
    now = host.clock.now()
    with host.transaction():
        return insert_rows(host.db, Partner, FIELDS, [(name, address, "email", 0, True, now)
                                                      for name, address in names_and_addresses],
                           returning_ids=True)


def test_values_present_names_only_the_values_some_matching_row_holds(make_host, db_url):
    host = make_host(db_url=db_url)
    _partners(host, [(f"P{i}", f"p{i}@example.com") for i in range(0, 2 * CHUNK + 10, 2)])
    asked = [f"p{i}@example.com" for i in range(2 * CHUNK + 10)]  # more than one chunk
    assert values_present(Partner, Partner.email_normalized, asked) == set(asked[::2])
    assert values_present(Partner, Partner.email_normalized, []) == set()
    # `where` narrows the rows: the name is one of these, as a parameter.
    assert values_present(Partner, Partner.email_normalized, asked, '"name" IN ({p}, {p})',
                          ("P4", "P5")) == {"p4@example.com"}


def test_update_ids_changes_only_the_named_rows_that_match(make_host, db_url):
    host = make_host(db_url=db_url)
    ids = _partners(host, [(f"P{i}", None) for i in range(2 * CHUNK + 5)])
    later = host.clock.now() + dt.timedelta(days=1)
    chosen = ids[1:-1]  # more than one chunk
    with host.transaction():
        Partner.update(active=False).where(Partner.id == ids[2]).execute()
        changed = update_ids(Partner, chosen, {Partner.name: "renamed", Partner.created_at: later,
                                               Partner.message_bounce: 3}, '"active" = {p}', (True,))
    assert changed == len(chosen) - 1
    rows = {p.id: p for p in Partner.select()}
    renamed = sorted(i for i, p in rows.items() if p.name == "renamed")
    assert renamed == sorted(set(chosen) - {ids[2]})
    assert all(rows[i].created_at == later and rows[i].message_bounce == 3 for i in renamed)
    assert update_ids(Partner, [], {Partner.name: "nobody"}) == 0


def test_update_ids_finds_its_rows_by_id_even_when_its_condition_has_an_index(make_host):
    # Without statistics SQLite's planner preferred the index of the condition's column and
    # read every row of that value for each chunk (a campaign's outgoing traces).
    host = make_host()
    ids = _partners(host, [(f"P{i}", "same@example.com") for i in range(20)])
    statements, execute = [], host.db.execute_sql
    host.db.execute_sql = lambda sql, params=None: (statements.append((sql, params)), execute(sql, params))[1]
    try:
        with host.transaction():
            assert update_ids(Partner, ids[:5], {Partner.name: "x"}, '"email_normalized" = {p}',
                              ("same@example.com",)) == 5
    finally:
        host.db.execute_sql = execute
    [(sql, params)] = [s for s in statements if s[0].startswith("UPDATE")]
    plan = " ".join(row[3] for row in host.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())
    assert "PRIMARY KEY" in plan and "email_normalized" not in plan, plan


def test_built_instances_hold_what_peewees_constructor_gives_them():
    """`built` stands for `model(**values)` on the gateway's hot path: the same data, dirty
    fields and relation cache, foreign keys given as instances or None."""
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    record = Record(id=7, model="generic", name="R", values={"a": 1}, created_at=now)
    author = Partner(id=9, name="Ann", email="ann@example.com", active=True, created_at=now)
    plain = dict(id=11, model="generic", email_from="Ann <ann@example.com>", subject="S", body="<p>b</p>",
                 message_type="email", is_internal=False, message_id="<m@x>", created_at=now, subtype="discussion")
    cases = [(Record, dict(id=7, model="generic", name="R", values=None, created_at=now), None),
             (Message, plain, {"record": record, "author": author}),
             (Message, plain, {"record": record, "author": None}),
             (Message, {"id": 12}, None)]  # defaults only
    for model, values, related in cases:
        expected, got = model(**values, **(related or {})), built(model, values, related)
        assert type(got) is model
        assert (got.__data__, got._dirty, got.__rel__) == (expected.__data__, expected._dirty, expected.__rel__)
    message = built(Message, plain, {"record": record, "author": author})
    assert message.record is record and message.author is author and message.author_id == 9


def test_skipping_duplicates_counts_the_rows_that_went_in_and_keeps_the_rows_already_there(make_host, db_url):
    from postroom.core.models import Follower
    host = make_host(db_url=db_url)
    now = host.clock.now()
    with host.transaction():
        record = insert_rows(host.db, Record, [Record.model, Record.name, Record.created_at],
                             [("t", "r", now)], returning_ids=True)[0]
        partners = insert_rows(host.db, Partner, [Partner.name, Partner.notification_type, Partner.message_bounce,
                                                  Partner.active, Partner.created_at],
                               [(f"P{i}", "email", 0, True, now) for i in range(CHUNK + 5)], returning_ids=True)
        first = insert_new_rows(host.db, Follower, [Follower.record, Follower.partner],
                                [(record, p) for p in partners[:3]])
        # Past one chunk, with rows already stored and a row repeated within the statement.
        rows = [(record, p) for p in partners] + [(record, partners[-1])]
        second = insert_new_rows(host.db, Follower, [Follower.record, Follower.partner], rows)
        empty = insert_new_rows(host.db, Follower, [Follower.record, Follower.partner], [])
    assert (first, second, empty) == (3, len(partners) - 3, 0)
    assert Follower.select().where(Follower.record == record).count() == len(partners)


def test_postgresql_statements_past_50_parameters_keep_every_kind_of_value_in_row_order(make_host, pg_database):
    # Past 50 parameters a statement goes with $1, $2 … (psycopg parses `%s` texts in Python
    # on every execution past 50): values that look like placeholders stay values, and a
    # literal %% in the text stays a percent sign.
    host = make_host(db_url=pg_database)
    now = host.clock.now()
    fields = [Partner.name, Partner.email, Partner.message_bounce, Partner.active, Partner.created_at,
              Partner.notification_type]
    batches = [[(f"P{n}-{i} %s $1 %%", None if i % 2 else f"p{n}-{i}@example.com", i, bool(i % 2), now, "email")
                for i in range(n)] for n in (1, 3, 40, CHUNK + 3)]
    before = host.db.statements
    with host.transaction():
        ids = [insert_rows(host.db, Partner, fields, rows, returning_ids=True) for rows in batches]
        # JSON documents (text) with a NULL among them; a column of NULLs only.
        records = insert_rows(host.db, Record, [Record.model, Record.name, Record.values, Record.created_at],
                              [("t", "a", {"k": [1, 2]}, now), ("t", "b", None, now)], returning_ids=True)
        nobody = insert_rows(host.db, Partner, fields, [("N1", None, 0, True, now, "email"),
                                                      ("N2", None, 1, False, now, "inbox")], returning_ids=True)
        added = insert_new_rows(host.db, Partner, fields, [("N3", None, 0, True, now, "email")])
    assert host.db.statements - before == 1 + 1 + 1 + 2 + 1 + 1 + 1  # one per chunk
    for rows, got in zip(batches, ids):
        stored = {p.id: p for p in Partner.select().where(Partner.id.in_(got))}
        assert [(stored[i].name, stored[i].email, stored[i].message_bounce, stored[i].active,
                 stored[i].created_at) for i in got] == [r[:5] for r in rows]
    assert [Record.get_by_id(i).values for i in records] == [{"k": [1, 2]}, None]
    assert [(Partner.get_by_id(i).name, Partner.get_by_id(i).email) for i in nobody] == [("N1", None), ("N2", None)]
    assert added == 1 and Partner.get(Partner.name == "N3").active
    p = host.db.param
    many = ids[2] + ids[3][:30]
    found = host.db.execute_sql(f'SELECT \'100%%\', "id" FROM "partner" WHERE "name" LIKE {p} AND "name" LIKE '
                                f'\'%%$1 %%\' AND "id" IN ({", ".join([p] * len(many))}) ORDER BY "id"',
                                ["P40-%", *many]).fetchall()
    assert found == [("100%", i) for i in sorted(ids[2])]
