"""Ids that are never handed out twice, for tables made before `AutoIncrementField`.

A SQLite table whose id is a plain INTEGER PRIMARY KEY gives the next row max(id) + 1,
so deleting the newest row (an auto-deleted sent mail, a vacuumed original) makes its id
name another row later, and an old log line or `inbound export ID` then points at the
wrong thing. AUTOINCREMENT cannot be added by ALTER TABLE: the table is rebuilt (SQLite's
"making other kinds of table schema changes" procedure) from its own stored DDL, so every
column, default and constraint a later migration added is kept as it is.

PostgreSQL needs nothing: a SERIAL column's sequence only moves forward.
"""
import logging
import re
import time

from .db import is_postgres

log = logging.getLogger("postroom")  # the host's logger: the line lands in postroom.log

_NAME = re.compile(r'^\s*CREATE\s+TABLE\s+(?:"[^"]+"|\w+)', re.IGNORECASE)
# peewee writes `"id" INTEGER NOT NULL PRIMARY KEY`; AUTOINCREMENT must follow PRIMARY KEY.
_ID_COLUMN = re.compile(r'((?:"id"|\bid\b)\s+INTEGER\b[^,]*?\bPRIMARY\s+KEY\b)', re.IGNORECASE)
_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)


class SchemaError(RuntimeError):
    """A table's stored DDL is not what the rebuild understands (the upgrade stops, with
    nothing changed: it runs in one transaction)."""


def never_reuse_ids(db, tables, floors=None) -> list[str]:
    """Make the SQLite `tables` hand out ids above every id they ever held; returns the
    tables rebuilt. Idempotent: a table that already has AUTOINCREMENT is left as it is.

    `floors` maps a table (of this list, or one already rebuilt) to scalar SQL queries
    giving ids it once held that live on elsewhere (e.g. the original ids in the inbound
    decision log, whose originals are vacuumed first): its sequence starts above those
    too. Rows deleted above the highest surviving id before this upgrade leave no trace in
    the table, so such references are the only evidence there is.

    All in one IMMEDIATE transaction (other writers wait on the busy timeout), with
    foreign keys off for the rebuild (dropping the old table must not cascade) and checked
    before commit. Call it outside a transaction: SQLite ignores the foreign-key pragma
    inside one (a migration using it sets `atomic = False`)."""
    if is_postgres(db):
        return []
    floors = floors or {}
    if db.in_transaction():
        raise SchemaError("never_reuse_ids must run outside a transaction (foreign keys "
                          "cannot be switched off inside one)")
    fks_on = bool(db.pragma("foreign_keys"))
    if fks_on:
        db.pragma("foreign_keys", 0)
    try:
        with db.atomic(lock_type="IMMEDIATE"):
            rebuilt = [t for t in tables if _rebuild(db, t)]
            for table in dict.fromkeys(list(tables) + list(floors)):
                _raise_sequence(db, table, floors.get(table, ()))
            _check_foreign_keys(db, rebuilt)
    finally:
        if fks_on:
            db.pragma("foreign_keys", 1)
    return rebuilt


def _table_sql(db, table):
    row = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                         (table,)).fetchone()
    return row[0] if row else None


def _rebuild(db, table) -> bool:
    sql = _table_sql(db, table)
    if sql is None or _AUTOINCREMENT.search(sql):
        return False
    temp = f"{table}__autoincrement"
    new_sql, renamed = _NAME.subn(f'CREATE TABLE "{temp}"', sql, count=1)
    new_sql, added = _ID_COLUMN.subn(r"\1 AUTOINCREMENT", new_sql, count=1)
    if not (renamed and added):
        raise SchemaError(f"table {table}: no INTEGER PRIMARY KEY id column in its DDL: {sql}")
    # Indexes and triggers go with the old table; their DDL is put back as it was.
    # (Indexes behind UNIQUE constraints have no DDL: the table's own DDL recreates them.)
    dependents = [r[0] for r in db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name", (table,)).fetchall()]
    columns = ", ".join(f'"{c.name}"' for c in db.get_columns(table))
    started = time.monotonic()
    db.execute_sql(f'DROP TABLE IF EXISTS "{temp}"')
    db.execute_sql(new_sql)
    copied = db.execute_sql(f'INSERT INTO "{temp}" ({columns}) SELECT {columns} FROM "{table}" '
                            f'ORDER BY "id"').rowcount
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(f'ALTER TABLE "{temp}" RENAME TO "{table}"')
    for statement in dependents:
        db.execute_sql(statement)
    # A big table takes a while (200,000 mails: 14 s on a busy 2-core machine): say why.
    log.info("table %s rebuilt with AUTOINCREMENT ids (%s rows, %.1f s): its ids are never "
             "handed out again", table, copied, time.monotonic() - started)
    return True


def _raise_sequence(db, table, floor_queries) -> None:
    """sqlite_sequence[table] = the highest id the table holds or is known to have held.
    (Copying rows with their ids already moved it to the highest surviving id.)"""
    sql = _table_sql(db, table)
    if sql is None or not _AUTOINCREMENT.search(sql):
        return
    highest = [db.execute_sql(f'SELECT MAX("id") FROM "{table}"').fetchone()[0]]
    highest += [db.execute_sql(query).fetchone()[0] for query in floor_queries]
    top = max((int(v) for v in highest if v is not None), default=0)
    current = db.execute_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    if current is None:
        if top:
            db.execute_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, top))
    elif current[0] < top:
        db.execute_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (top, table))


def _check_foreign_keys(db, rebuilt) -> None:
    """Fail (and roll back) if a rebuilt table broke a reference, either way. Violations
    between other tables, older than this upgrade, are not this migration's to judge."""
    if not rebuilt:
        return
    names = set(rebuilt)
    broken = [row for row in db.execute_sql("PRAGMA foreign_key_check").fetchall()
              if row[0] in names or row[2] in names]
    if broken:
        raise SchemaError(f"rebuilding {', '.join(rebuilt)} would break {len(broken)} "
                          f"reference(s), e.g. {broken[:3]}")
