"""The one module that owns database objects: URL → engine, statement counting, UTC times.

`sqlite:///postroom.db` (relative), `sqlite:////abs/path.db` and `postgresql://user@host/db`
are understood. Every datetime column stores naive UTC and gives back aware UTC.
"""
import contextlib
import datetime as dt
import functools
import itertools
import json
import operator
import re
import sqlite3
import threading
from urllib.parse import unquote, urlparse

import peewee as pw

from .checkpoints import BACKSTOP_PAGES
from .clock import aware, naive
from .errors import ConfigError, DatabaseUnavailable, first_line


CHUNK = 500  # rows per multi-row INSERT, ids per IN (...): statements grow with rows / CHUNK only


def chunks(values, size: int = CHUNK):
    """`values` in lists of at most `size` (the one way Postroom splits set-based work)."""
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def delete_chunk(model, condition, batch_size: int, after: int = 0, before_delete=None) -> tuple[int, int, int]:
    """Delete at most `batch_size` rows of `model` matching `condition`, with ids above
    `after`, lowest ids first; `before_delete(ids)`, when given, is told which (to log them).

    Returns (removed, remaining, last id removed) where remaining is 1 when at least one
    more row matches (a lower bound, not a count: counting a million rows on every chunk
    would cost more than deleting them) and 0 when the sweep is done. Two statements
    whatever the size.
    """
    ids = [row[0] for row in model.select(model.id).where(condition & (model.id > after))
           .order_by(model.id).limit(batch_size + 1).tuples()]
    chunk = ids[:batch_size]
    if chunk:
        if before_delete is not None:
            before_delete(chunk)
        model.delete().where(model.id.in_(chunk)).execute()
    return len(chunk), 1 if len(ids) > batch_size else 0, chunk[-1] if chunk else after


def insert_rows(db, model, fields, rows, returning_ids: bool = False) -> list[int]:
    """Multi-row INSERTs of `rows` (tuples in `fields` order), CHUNK rows per statement,
    the SQL written directly: peewee's query compiler cost more than the database itself
    for a 500-row chunk (measured: half of a campaign batch). Values go through each
    field's `db_value`, as peewee would. With `returning_ids`, the new ids in row order
    (RETURNING on PostgreSQL; on SQLite one statement's rows get consecutive rowids, and
    the caller's transaction holds the write lock)."""
    return insert_rows_later(db, model, fields, rows, returning_ids)()


def insert_rows_later(db, model, fields, rows, returning_ids: bool = False):
    """`insert_rows`, its statements executed now and its answer read when the returned
    function is called: within `db.pipeline()` the database is not waited for until then,
    so the statements that follow go out with these."""
    postgres = is_postgres(db)
    cursors, ids = [], []
    for sql, params, n in _inserts(db, model, fields, rows):
        if returning_ids and postgres:
            cursors.append(db.execute_sql(sql + ' RETURNING "id"', params))
        else:
            cursor = db.execute_sql(sql, params)
            if returning_ids:
                ids.extend(range(cursor.lastrowid - n + 1, cursor.lastrowid + 1))

    def result() -> list[int]:
        for cursor in cursors:
            ids.extend(r[0] for r in _answer(cursor)[1])
        cursors.clear()
        return ids
    return result


def rows_later(db, sql: str, params=()):
    """A function giving the rows of `sql`, which is executed now on either engine: within
    `db.pipeline()` its answer is read when the function is called (the statements that
    follow go out with it), otherwise at once."""
    return _later(db, sql, params, lambda names, rows: rows)


def _later(db, sql, params, then):
    """A function giving `then(column names, rows)` of `sql`, executed now (see `rows_later`)."""
    cursor = db.execute_sql(sql, params)
    if not getattr(db, "pipelined", False):
        done = then(*_answer(cursor))
        return lambda: done
    return lambda: then(*_answer(cursor))


def _answer(cursor) -> tuple[list, list]:
    """(column names, rows) of an executed cursor, which is then closed (SQLite's read of
    it ends now); a pipelined statement's error arrives here, as peewee's exception."""
    try:
        with pw.__exception_wrapper__:
            rows = cursor.fetchall()
        return [d[0] for d in cursor.description or ()], rows
    finally:
        cursor.close()


def insert_new_rows(db, model, fields, rows) -> int:
    """`insert_rows` leaving out each row that would break a unique constraint (ON
    CONFLICT DO NOTHING: only uniqueness, not NOT NULL or CHECK, unlike SQLite's OR
    IGNORE); returns how many rows went in."""
    return sum(db.execute_sql(sql + " ON CONFLICT DO NOTHING", params).rowcount
               for sql, params, _ in _inserts(db, model, fields, rows))


def _inserts(db, model, fields, rows):
    """(sql, params, row count) of each chunk's multi-row INSERT of `rows`.

    On SQLite a value that every row of the chunk shares (a batch's times, flags, subject,
    body, sender) is bound once, in a SELECT list over the chunk's VALUES of the other
    columns: binding it again on every row cost more than storing it (16 of a campaign
    mail's 21 columns; its chunk's INSERT took 40% less), from SHARED_MIN_ROWS rows on.
    PostgreSQL keeps plain VALUES, whose parameters take their types from the columns they
    go into."""
    table = model._meta.table_name
    sqlite = getattr(db, "engine", "") == "sqlite"
    adapt = _sqlite_bound if sqlite else None
    for part in chunks(rows):
        converted = [_column_values(f, column, adapt) for f, column in zip(fields, zip(*part))]
        shared = [shared for _, shared in converted]
        if sqlite and len(part) >= SHARED_MIN_ROWS and any(shared):
            yield _insert_select(db, table, fields, converted, len(part))
            continue
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        one = "(" + ", ".join([db.param] * len(fields)) + ")"
        params = list(itertools.chain.from_iterable(zip(*(values for values, _ in converted))))
        yield f'INSERT INTO "{table}" ({columns}) VALUES ' + ", ".join([one] * len(part)), params, len(part)


# Rows from which a chunk binds its shared values once: below it the longer statement cost
# more to run than the parameters it saved (thread CPU per transaction, a partner row of
# seven columns, four shared: 68 against 62 us at 4 rows, even at 8, 142 against 157 at 32),
# and the gateway's small batches, whose shared columns change from batch to batch, would
# each have given the driver's statement cache a text of its own.
SHARED_MIN_ROWS = 8


def _insert_select(db, table, fields, converted, n):
    """`INSERT … SELECT ?, column1, … FROM (VALUES …) WHERE true`: each shared value one
    parameter in the SELECT list, the others in the VALUES rows, which keep their order.
    (`WHERE true`: SQLite's parser needs it before an ON CONFLICT clause.) A chunk whose
    every column is shared still lists its first in VALUES, one row per row."""
    varying = [j for j, (_, shared) in enumerate(converted) if not shared] or [0]
    position = {j: k for k, j in enumerate(varying, start=1)}
    select = ", ".join(f"column{position[j]}" if j in position else db.param for j in range(len(fields)))
    one = "(" + ", ".join([db.param] * len(varying)) + ")"
    params = [values[0] for j, (values, _) in enumerate(converted) if j not in position]
    params.extend(itertools.chain.from_iterable(zip(*(converted[j][0] for j in varying))))
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    return (f'INSERT INTO "{table}" ({columns}) SELECT {select} FROM (VALUES '
            + ", ".join([one] * n) + ") WHERE true", params, n)


# Fields whose db_value gives back a value of this type (and None) unchanged.
_AS_IS = {pw.CharField: str, pw.TextField: str, pw.IntegerField: int, pw.BigIntegerField: int,
          pw.BooleanField: bool, pw.AutoField: int}
_NONE = type(None)
# Types whose equal values (of one type) are stored the same: equality may stand for identity.
_SCALARS = {str, int, float, bool, _NONE, dt.datetime, dt.date, bytes}


def _as_is_kind(field):
    """The type `field.db_value` keeps as it is, or None: a foreign key's is its target's."""
    if isinstance(field, pw.ForeignKeyField):
        field = field.rel_field
    kind = _AS_IS.get(type(field))
    if kind is None and isinstance(field, pw.AutoField):  # AutoIncrementField (below)
        kind = int
    return kind


def _sqlite_bound(value):
    """What the sqlite3 driver binds for a datetime: its registered adapter's text (Python's
    own before 3.12, peewee's after), asked of the driver itself, so the text is the one a
    parameter would have become."""
    return sqlite3.adapt(value, sqlite3.PrepareProtocol, value)


def _column_values(field, values, adapt=None) -> tuple[list | tuple, bool]:
    """`field.db_value` of each of one column's values. A column whose values are all equal
    and of one type (a batch's timestamps, flags, subject and body; a document only when it
    is the very same object) is converted once; a column of plain text, integers, flags or
    ids goes as it is; the others are converted once per distinct value (converting a
    datetime costs microseconds); unhashable values (JSON documents) each on their own.
    The tests run in C (count, a set of types): a Python test per value cost as much as
    what it saved. `adapt` (SQLite's `_sqlite_bound`): a datetime is also turned into the
    text the driver would bind, once per distinct value rather than once per parameter (a
    campaign batch binds four timestamps per recipient, and the driver's adapter is Python).
    Returns (the values, whether every row has the one same value)."""
    first, types = values[0], set(map(type, values))
    if len(types) == 1 and (values.count(first) == len(values) if type(first) in _SCALARS
                            else len(set(map(id, values))) == 1):  # a document: the very same one
        value = field.db_value(first)
        if adapt is not None and type(value) is dt.datetime:
            value = adapt(value)
        return [value] * len(values), True
    kind = _as_is_kind(field)
    if kind is not None:
        types.discard(_NONE)
        if not types or types == {kind}:
            return values, False
    convert, seen, out = field.db_value, {}, []
    if adapt is not None and isinstance(field, UTCDateTimeField):
        def convert(v, db_value=field.db_value):
            v = db_value(v)
            return adapt(v) if type(v) is dt.datetime else v
    for v in values:
        try:
            key = (type(v), v)
            out.append(seen[key])
        except KeyError:
            out.append(seen.setdefault(key, convert(v)))
        except TypeError:  # a dict or list: a JSON column
            out.append(convert(v))
    return out, False


def update_ids(model, ids, values: dict, where: str = "", params=()) -> int:
    """UPDATE `model` SET `values` ({field: value}, each through the field's `db_value`) for
    the rows whose id is one of `ids` (also matching `where`, raw SQL with `{p}` for each
    of `params`, when given); returns the rows changed. One statement per CHUNK ids, its
    SQL written directly: peewee compiling one parameter per id cost more than the UPDATE
    (5 ms for 500 ids). The text depends only on the chunk's size, so the driver's
    statement cache keeps one per size, not one per chunk.

    On SQLite the rows are found by their rowids (NOT INDEXED, when the id is the rowid):
    without statistics its planner took an index on a column of `where` instead, `status`
    say, and read every row of that status for each chunk (a campaign's 10,000 outgoing
    traces, twenty times over, to mark them sent)."""
    db = model._meta.database
    fields = list(values)
    assignments = ", ".join(f'"{f.column_name}" = {db.param}' for f in fields)
    converted = [f.db_value(values[f]) for f in fields]
    extra = f" AND ({where.format(p=db.param)})" if where else ""
    key = model._meta.primary_key.column_name
    by_rowid = " NOT INDEXED" if getattr(db, "engine", "") == "sqlite" and isinstance(
        model._meta.primary_key, pw.AutoField) else ""
    changed = 0
    for part in chunks(ids):
        sql = (f'UPDATE "{model._meta.table_name}"{by_rowid} SET {assignments} WHERE "{key}" IN ('
               + ", ".join([db.param] * len(part)) + ")" + extra)
        changed += db.execute_sql(sql, converted + [operator.index(i) for i in part] + list(params)).rowcount
    return changed


def values_present(model, field, values, where: str = "", params=()) -> set:
    """Which of `values` some row of `model` holds in `field` (also matching `where`, raw
    SQL with `{p}` for each of `params`, when given): one SELECT per CHUNK values, its SQL
    written directly (peewee compiling an IN list of a thousand values cost several times
    what the database takes to answer it)."""
    db = model._meta.database
    column = f'"{field.column_name}"'
    extra = f" AND ({where.format(p=db.param)})" if where else ""
    found = set()
    for part in chunks(sorted(set(values))):
        sql = (f'SELECT {column} FROM "{model._meta.table_name}" WHERE {column} IN ('
               + ", ".join([db.param] * len(part)) + ")" + extra)
        found.update(v for (v,) in db.execute_sql(sql, [field.db_value(v) for v in part] + list(params)).fetchall())
    return found


def insert_one(db, model, values: dict) -> int:
    """INSERT one row of `model` (values by field name, through each field's `db_value`)
    and return its id; the SQL written directly (see `insert_rows`), for rows written once
    per message on the inbound path."""
    key = (model, db.param, is_postgres(db), tuple(values))
    shape = _ONE_ROW.get(key)
    if shape is None:  # the SQL of each (table, columns) is built once
        fields = [model._meta.fields[name] for name in values]
        sql = (f'INSERT INTO "{model._meta.table_name}" ('
               + ", ".join(f'"{f.column_name}"' for f in fields) + ") VALUES ("
               + ", ".join([db.param] * len(fields)) + ")" + (' RETURNING "id"' if key[2] else ""))
        shape = _ONE_ROW[key] = (sql, [f.db_value for f in fields])
    sql, converters = shape
    cursor = db.execute_sql(sql, [convert(v) for convert, v in zip(converters, values.values())])
    return cursor.fetchone()[0] if key[2] else cursor.lastrowid


_ONE_ROW = {}


def select_first(model, sql: str, params=(), memo: dict | None = None):
    """The first `model` row of a hand-written SELECT (its columns named as the model's,
    `{p}` in `sql` standing for the engine's placeholder), or None. Values are converted by
    each field's `python_value`, as a peewee query would, without its query compiler (which
    costs more than SQLite answering a lookup by an indexed column).

    `memo` (a dict the caller keeps, for rows it only reads): a row read again with the
    same values gives the instance built the first time (building one cost more than the
    query: the row is still read each time, so nothing is stale)."""
    names, rows = _read(model, sql, params, one=True)
    if not rows:
        return None
    return _instance(model, names, rows[0]) if memo is None else _remembered(memo, model, names, rows[0])


def _read(model, sql: str, params, one: bool):
    """(column names, rows) of a hand-written SELECT on `model`'s database: the first row
    only with `one`."""
    db = model._meta.database
    cursor = db.execute_sql(sql.format(p=db.param), params)
    if not one:
        return _answer(cursor)
    try:
        row = cursor.fetchone()
        return [d[0] for d in cursor.description or ()], [] if row is None else [row]
    finally:
        cursor.close()  # ends SQLite's read of it now, not when the cursor is collected


def _remembered(memo, model, names, row):
    key = (tuple(names), tuple(row))
    try:
        found = memo.get(key)
    except TypeError:  # a value that cannot be a key (a driver's dict, say): built each time
        return _instance(model, names, row)
    if found is None:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        found = memo[key] = _instance(model, names, row)
    return found


_MEMO_MAX = 10_000


def select_all(model, sql: str, params=(), memo: dict | None = None) -> list:
    """Every `model` row of a hand-written SELECT (see `select_first`, and its `memo`)."""
    names, rows = _read(model, sql, params, one=False)
    return _instances(model, names, rows, memo)


def select_all_later(model, sql: str, params=(), memo: dict | None = None):
    """`select_all` as a function to call for its rows: see `rows_later`."""
    db = model._meta.database
    return _later(db, sql.format(p=db.param), params, lambda names, rows: _instances(model, names, rows, memo))


def _instances(model, names, rows, memo) -> list:
    if memo is not None:
        return [_remembered(memo, model, names, row) for row in rows]
    return [_instance(model, names, row) for row in rows]


def _instance(model, names, row):
    columns = model._meta.columns
    data = {}
    for name, value in zip(names, row):
        field = columns.get(name)
        data[name] = field.python_value(value) if field is not None else value
    found = model(__no_default__=1, **data)
    found._dirty.clear()
    return found


def built(model, values: dict, related: dict | None = None):
    """`model(**values, **related)` for a row the caller just inserted, without peewee's
    descriptor call per field (a message's dozen fields cost more than its share of the
    INSERT). `values`: field name -> Python value; `related`: foreign-key field name ->
    the instance it points to, or None. The same data, dirty set and relation cache as
    peewee's constructor makes (a test pins it against the installed peewee)."""
    found = model.__new__(model)
    data = model._meta.get_default_dict()
    data.update(values)
    rel = {}
    if related:
        fields = model._meta.fields
        for name, target in related.items():
            if target is None:
                data[name] = None
            else:
                data[name] = getattr(target, fields[name].rel_field.name)
                rel[name] = target
    found.__data__, found._dirty, found.__rel__ = data, set(data), rel
    return found


_PREPARED: dict = {}


def run_prepared(db, key, build, *values):
    """Run the peewee statement `build(*values)` with its SQL text rendered once per (key,
    engine): a hot path's statement otherwise costs a third of a millisecond of query
    building each time, as much as the rest of a mail's work. `build` is called once with
    stand-in values to find where each value goes. Returns the cursor."""
    cache_key = (key, db.engine)
    entry = _PREPARED.get(cache_key)
    if entry is None:
        sentinels = [_sentinel(v, k) for k, v in enumerate(values)]
        sql, params = build(*sentinels).sql()
        plain = [naive(x) if isinstance(x, dt.datetime) else x for x in sentinels]
        order = []
        for param in params:
            matches = [k for k, x in enumerate(plain) if type(x) is type(param) and x == param]
            order.append(matches[0] if matches else ("const", param))
        entry = _PREPARED[cache_key] = (sql, order)
    sql, order = entry
    args = [values[o] if not isinstance(o, tuple) else o[1] for o in order]
    args = [naive(a) if isinstance(a, dt.datetime) else a for a in args]
    return db.execute_sql(sql, args)


def _sentinel(value, k):
    if isinstance(value, dt.datetime):
        return dt.datetime(1901, 1, 1, 0, 0, 0, 1000 + k, tzinfo=dt.timezone.utc)
    if isinstance(value, int):
        return -7_000_000 - k
    return f"\x00sentinel{k}"


class _Counting:
    """Counts executed statements (per database object) so tests and benches can assert
    that an operation's statement count does not grow with the rows it touches."""

    def execute_sql(self, sql, params=None):
        self.statements += 1
        return super().execute_sql(sql, params)


class SqliteDatabase(_Counting, pw.SqliteDatabase):
    engine = "sqlite"

    def __init__(self, *args, **kwargs):
        self.statements = 0
        super().__init__(*args, **kwargs)

    def transaction_block(self):
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy
        # timeout instead of failing later with "database is locked" on upgrade.
        return self.atomic(lock_type="IMMEDIATE")

    pipelined = False

    def pipeline(self):
        """A plain block: SQLite answers in-process (see `PostgresqlDatabase.pipeline`)."""
        return contextlib.nullcontext(self)

    def end_pipeline(self):
        pass


class PostgresqlDatabase(_Counting, pw.PostgresqlDatabase):
    engine = "postgresql"

    def __init__(self, *args, **kwargs):
        self.statements = 0
        self._pipelines = threading.local()
        super().__init__(*args, **kwargs)

    def transaction_block(self):
        return self.atomic()

    def execute_sql(self, sql, params=None):
        """peewee's, but a statement of more than 50 parameters goes with PostgreSQL's own
        numbered placeholders ($1, $2, …) through psycopg's RawCursor, which passes them on
        as they are. A `%s` text psycopg parses in Python on every execution, caching that
        only up to 50 parameters: a gateway batch's decision rows (18 columns) pass that at
        three messages, a campaign's 500-row INSERT or UPDATE of ids at once. Ours is
        parsed once per text (`_numbered`). Measured for 6 decision rows (108 parameters):
        300 us to convert the query against 20; a transaction of three such INSERTs,
        1.66 ms of CPU against 0.94."""
        numbered = _numbered(sql) if params and len(params) > _PSYCOPG_CACHED_PARAMS and _RAW_CURSOR else None
        if numbered is None or numbered[1] != len(params):
            return super().execute_sql(sql, params)
        self.statements += 1
        # peewee's own execution (its logging, query hooks and error translation), on a raw cursor
        return self._execute_cursor(numbered[0], params, raw=True)

    def cursor(self, named_cursor=None, raw=False):
        """peewee's cursor, or with `raw` psycopg's RawCursor (see `execute_sql`)."""
        if not raw:
            return super().cursor(named_cursor)
        if self.is_closed() and not self.autoconnect:
            raise pw.InterfaceError("Error, database connection not opened.")
        return _RAW_CURSOR(self.connection())

    @property
    def pipelined(self) -> bool:
        """Whether this thread's statements are pipelined (see `pipeline`)."""
        return getattr(self._pipelines, "current", None) is not None

    def pipeline(self):
        """A block in which this thread's statements go out without waiting for the
        server, their results read when a caller asks for them (libpq's pipeline mode,
        through psycopg 3): a transaction of a dozen statements then waits for the answers
        its next statements need, not for each statement. (psycopg still polls the socket
        once per statement, handing the interpreter lock to any other busy thread each time:
        in the gateway bench, one process on PostgreSQL, this gave about a fifth more
        messages per second, not the several times fewer waits would suggest.)

        Inside it a cursor's `rowcount` is unknown until its rows are read, so only code
        written for it runs there; `end_pipeline()` leaves it early. A COMMIT in it ends
        it (every result read, any error raised) before the commit returns, so work queued
        for after the commit never runs for a transaction that failed. Without psycopg 3's
        pipeline support, a plain block."""
        return _Pipeline(self)

    def end_pipeline(self):
        """Read every pending result (raising the first error) and leave pipeline mode."""
        pipe = getattr(self._pipelines, "current", None)
        if pipe is not None:
            self._pipelines.current = None
            with pw.__exception_wrapper__:
                pipe.__exit__(None, None, None)

    def _abandon_pipeline(self):
        """Leave pipeline mode after an error: its other results no longer matter."""
        pipe = getattr(self._pipelines, "current", None)
        if pipe is not None:
            self._pipelines.current = None
            try:  # reads what is pending (the first error again, or a broken connection's)
                pipe.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - the error being handled already said it
                pass

    def commit(self):
        if not self.pipelined:
            return super().commit()
        with pw.__exception_wrapper__:
            self.cursor().execute("COMMIT")
        self.end_pipeline()  # the COMMIT's own answer, before anything counts on it

    def rollback(self):
        self._abandon_pipeline()
        return super().rollback()

    def close(self):
        self._abandon_pipeline()
        return super().close()


class _Pipeline:
    """`PostgresqlDatabase.pipeline()`'s block (not nested: an inner one is plain)."""
    __slots__ = ("db", "entered")

    def __init__(self, db):
        self.db, self.entered = db, False

    def __enter__(self):
        db = self.db
        if db.pipelined or not _PIPELINES:
            return self
        conn = db.connection()
        pipeline = getattr(conn, "pipeline", None)
        if pipeline is None:  # psycopg 2
            return self
        pipe = pipeline()  # psycopg's context manager: left through its __exit__
        with pw.__exception_wrapper__:
            pipe.__enter__()
        db._pipelines.current, self.entered = pipe, True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.entered:
            self.entered = False
            if exc_type is None:
                self.db.end_pipeline()
            else:
                self.db._abandon_pipeline()
        return False


def _pipelines_supported() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return psycopg.Pipeline.is_supported()


_PIPELINES = _pipelines_supported()


def _raw_cursor():
    """psycopg's cursor for numbered placeholders (psycopg 3.2 on; setup.cfg asks for it)."""
    try:
        from psycopg import RawCursor
    except ImportError:  # no psycopg: PostgreSQL is not used
        return None
    return RawCursor


_RAW_CURSOR = _raw_cursor()
_PSYCOPG_CACHED_PARAMS = 50  # psycopg's MAX_CACHED_STATEMENT_PARAMS: above it, no cache
_PLACEHOLDER = re.compile(r"%(.)", re.S)


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> tuple[str, int] | None:
    """(`sql` with each `%s` made `$1`, `$2`, … and `%%` made `%`, how many), psycopg's
    own reading of such a text; None for any other `%` form (left to psycopg). Cached per
    text: Postroom's big statements have one text per chunk size, the largest a 500-row
    INSERT of 21 columns (about 110 kB in and out), so the cache stays under 10 MB."""
    count, other = 0, False

    def number(match):
        nonlocal count, other
        kind = match.group(1)
        if kind == "s":
            count += 1
            return f"${count}"
        if kind == "%":
            return "%"
        other = True
        return match.group(0)
    text = _PLACEHOLDER.sub(number, sql)
    return None if other else (text, count)


def open_database(url: str) -> pw.Database:
    """Build (not connect) the database object for a URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"bad sqlite URL {url!r}: use sqlite:///relative.db or sqlite:////abs/path.db")
        return SqliteDatabase(
            path,
            # wal_autocheckpoint: the host's thread does the copying (core.checkpoints);
            # a commit checkpoints only what is left once the log holds this many pages.
            pragmas={"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000,
                     "synchronous": "normal", "wal_autocheckpoint": BACKSTOP_PAGES},
            timeout=30,
            check_same_thread=False,
        )
    if parsed.scheme in ("postgres", "postgresql"):
        name = (parsed.path or "/").lstrip("/")
        if not name:
            raise ConfigError(f"bad PostgreSQL URL {url!r}: the database name is missing")
        kwargs = {"host": parsed.hostname or "127.0.0.1", "port": parsed.port or 5432,
                  "user": unquote(parsed.username) if parsed.username else None,
                  "password": unquote(parsed.password) if parsed.password else None,
                  "connect_timeout": 5}
        return PostgresqlDatabase(name,
                                  **{k: v for k, v in kwargs.items() if v is not None})
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://USER@HOST/DB")


def is_postgres(db) -> bool:
    return getattr(db, "engine", "") == "postgresql"


def sqlite_file(db) -> str | None:
    """The path of `db`'s SQLite database file, or None (PostgreSQL, or an in-memory
    database): where its log, lock files and checkpoint thread belong."""
    path = getattr(db, "database", None) if isinstance(db, pw.SqliteDatabase) else None
    return path if path and path != ":memory:" else None


def side_connection(db, name: str):
    """A second connection to `db`'s PostgreSQL database, beside peewee's and unknown to it
    (autocommit), for a caller that drives it with libpq's asynchronous calls
    (`conn.pgconn`: send a statement now, read its result later); `name` is its
    application_name in pg_stat_activity. None on SQLite, or without psycopg 3 (whatever
    driver peewee itself uses)."""
    if not is_postgres(db):
        return None
    try:
        import psycopg
    except ImportError:
        return None
    return psycopg.connect(dbname=db.database, autocommit=True, application_name=name, **db.connect_params)


def transaction(db):
    """One write transaction; multi-row writes go through here so nothing is half-written."""
    return db.transaction_block()


class Savepoint:
    """A savepoint in the open transaction, named after its depth: what peewee's nested
    `atomic()` does, without a uuid and its bookkeeping for each (the inbound gateway
    nests three per message it stores). Rolled back and released on an exception."""

    __slots__ = ("db", "name")

    def __init__(self, db, depth: int):
        self.db, self.name = db, f'"postroom_sp{depth}"'

    def __enter__(self):
        self.db.execute_sql("SAVEPOINT " + self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.db.execute_sql("RELEASE SAVEPOINT " + self.name)
            return False
        self.db.execute_sql("ROLLBACK TO SAVEPOINT " + self.name)
        self.db.execute_sql("RELEASE SAVEPOINT " + self.name)
        return False


def setup_lock(host) -> None:
    """Serialise first-time setup (the admin partner, ...) across processes, inside the
    caller's transaction: a transaction-scoped advisory lock on PostgreSQL; on SQLite the
    write lock taken at BEGIN IMMEDIATE already does it."""
    if is_postgres(host.db):
        host.db.execute_sql("SELECT pg_advisory_xact_lock(7319002)")


@contextlib.contextmanager
def translate_errors(url: str):
    """Turn driver errors about reaching the database into one operator-readable error."""
    try:
        yield
    except pw.OperationalError as exc:
        text = first_line(exc) or type(exc).__name__
        raise DatabaseUnavailable(f"database {redact(url)} unavailable: {text}") from exc
    except (pw.IntegrityError, pw.DataError, pw.ProgrammingError, pw.NotSupportedError):
        raise
    except pw.DatabaseError as exc:  # e.g. SQLite's "file is not a database"
        text = first_line(exc) or type(exc).__name__
        raise ConfigError(f"database {redact(url)} cannot be used: {text} (does `database` name "
                          f"the right file?)") from exc


def redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(":" + parsed.password + "@", ":***@")
    return url


class UTCDateTimeField(pw.DateTimeField):
    """Stores naive UTC, returns aware UTC; accepts aware or naive-UTC input."""

    def db_value(self, value):
        if isinstance(value, dt.datetime):
            value = naive(value)
        return super().db_value(value)

    def python_value(self, value):
        return aware(super().python_value(value))


class AutoIncrementField(pw.AutoField):
    """The integer id of every Postroom table: never handed out twice, so `mail 5` in a
    log names one mail for ever. On SQLite that takes AUTOINCREMENT (a plain INTEGER
    PRIMARY KEY hands the highest id out again once its row is deleted, e.g. an
    auto-deleted sent mail); PostgreSQL's SERIAL sequence already never goes back."""

    def ddl(self, ctx):
        nodes = super().ddl(ctx)
        # The context carries the engine's type names only: SQLite's AUTO is the bare
        # rowid alias INTEGER (PostgreSQL says SERIAL, MySQL INTEGER AUTO_INCREMENT).
        if ctx.state.field_types.get("AUTO") == "INTEGER":
            return pw.NodeList((nodes, pw.SQL("AUTOINCREMENT")))
        return nodes


class JSONField(pw.TextField):
    """Small JSON documents stored as text on both engines."""

    def db_value(self, value):
        return None if value is None else _JSON_TEXT(value)

    def python_value(self, value):
        return None if value is None else json.loads(value)


# json.dumps(value, sort_keys=True), with its encoder built once: dumps builds one per
# call when given an option, which cost more than encoding a mail's few headers.
_JSON_TEXT = json.JSONEncoder(sort_keys=True).encode


