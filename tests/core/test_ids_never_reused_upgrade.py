"""Upgrading a SQLite database made before ids were AUTOINCREMENT: every table with an id is
rebuilt with it, rows, indexes and foreign keys survive, and ids deleted before or after
the upgrade are never handed out again (as far as the database remembers them)."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from postroom.core.db import SqliteDatabase
from postroom.core.row_ids import never_reuse_ids

POSTROOM = shutil.which("postroom", path=os.path.dirname(sys.executable)) or "postroom"
DUMP = Path(__file__).parent / "fixtures" / "before_autoincrement.sql"
ID_TABLES = {
    "partner", "record", "message", "follower", "notification", "cron_action", "cron_trigger",
    "attachment", "template", "console_operator", "console_login_attempt", "inbound_alias",
    "inbound_original", "inbound_decision", "marketing_list", "marketing_contact",
    "marketing_blacklist", "marketing_bounce", "marketing_campaign", "marketing_campaign_list",
    "marketing_trace", "mail_queue_mail", "mail_queue_server", "mail_queue_dkim_key"}
NEW_MIGRATIONS = {"core": "0005_ids_never_reused", "console": "0002_ids_never_reused",
                  "mail_queue": "0007_ids_never_reused", "mail_marketing": "0004_ids_never_reused",
                  "inbound": "0004_ids_never_reused"}


def old_deployment(tmp_path):
    """The dumped pre-upgrade database, restored under tmp_path, and a config file for it."""
    path = tmp_path / "postroom.db"
    with sqlite3.connect(path) as con:
        con.executescript(DUMP.read_text())
    config = tmp_path / "postroom.cfg"
    config.write_text(f"[postroom]\ndatabase = sqlite:///{path}\nlog_dir = {tmp_path / 'logs'}\n"
                      f"data_dir = {tmp_path / 'data'}\ndomains = example.com\nsmtp_port = 1\n")
    return path, config


def connect(path):
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys = ON")  # as Postroom always has it
    return con


def postroom(config, *args, input=None):
    result = subprocess.run([POSTROOM, "--config", str(config), *args], input=input, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def snapshot(con, tables=None):
    """What the upgrade must keep: the tables' rows, indexes, foreign keys and columns (of
    `tables`, default every table: later migrations may add tables and indexes of their own)."""
    if tables is None:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                            "name NOT LIKE 'sqlite_%' AND name NOT LIKE 'migrations_%'")]
    return {
        "rows": {t: con.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables},
        "columns": {t: con.execute(f'PRAGMA table_info("{t}")').fetchall() for t in tables},
        "foreign_keys": {t: con.execute(f'PRAGMA foreign_key_list("{t}")').fetchall() for t in tables},
        "indexes": set(con.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")),
    }


# Indexes a later migration drops on purpose (each repeated the first column of a unique
# or covering index on its table: core 0006, inbound 0005, mail_marketing 0005; that one
# also replaces the trace (status, created_at) index with a partial one).
DROPPED_INDEXES = {"follower_record_id", "notification_message_id", "inbound_decision_sender",
                   "marketing_trace_campaign_id", "marketing_trace_status_created_at"}


def assert_kept(before, after):
    for part in ("rows", "columns", "foreign_keys"):
        assert after[part] == before[part], part
    kept = {i for i in before["indexes"] if i[0] not in DROPPED_INDEXES}
    assert kept <= after["indexes"], kept - after["indexes"]
    assert not {i[0] for i in after["indexes"]} & DROPPED_INDEXES


def table_sql(con):
    return dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def top_id(con, table):
    return con.execute(f'SELECT MAX(id) FROM "{table}"').fetchone()[0]


def test_upgrading_an_old_database_rebuilds_every_id_table_with_autoincrement_and_keeps_its_data(tmp_path):
    path, config = old_deployment(tmp_path)
    with connect(path) as con:
        before_sql = table_sql(con)
        assert not any("AUTOINCREMENT" in sql for sql in before_sql.values())
        # The newest rows go before the upgrade: a sent mail (nothing remembers its id), the
        # only inbound original (its decision-log row still names it) and the newest contact
        # (its trace and its campaign's cursor still name it).
        deleted_mail, deleted_original, deleted_contact = (top_id(con, t) for t in (
            "mail_queue_mail", "inbound_original", "marketing_contact"))
        con.execute("DELETE FROM mail_queue_mail WHERE id = ?", (deleted_mail,))
        con.execute("DELETE FROM inbound_original WHERE id = ?", (deleted_original,))
        con.execute("DELETE FROM marketing_contact WHERE id = ?", (deleted_contact,))
        # A column a later migration (or a third party) added: the rebuild keeps it, default too.
        con.execute("ALTER TABLE mail_queue_mail ADD COLUMN \"x_note\" TEXT DEFAULT 'kept'")
        before = snapshot(con)
        surviving_mail = top_id(con, "mail_queue_mail")
    con.close()

    postroom(config, "plugins", "list")  # any command upgrades

    with connect(path) as con:
        after_sql = table_sql(con)
        assert {t for t, sql in after_sql.items() if "AUTOINCREMENT" in sql} == ID_TABLES
        for table in set(before_sql) - ID_TABLES - {"sqlite_sequence"}:
            assert after_sql[table] == before_sql[table], table
        assert_kept(before, snapshot(con, list(before["rows"])))
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        for component, name in NEW_MIGRATIONS.items():
            assert con.execute(f"SELECT COUNT(*) FROM migrations_{component} WHERE name = ?",
                               (name,)).fetchone() == (1,)
        sequences = dict(con.execute("SELECT name, seq FROM sqlite_sequence"))
        assert sequences["inbound_original"] >= deleted_original
        assert sequences["marketing_contact"] >= deleted_contact
        assert sequences["mail_queue_mail"] == surviving_mail
    con.close()

    # New rows, through the real CLI, get ids above everything the database remembers.
    new_mail = int(postroom(config, "mail", "send", "--to", "new@example.org", "--subject", "S",
                            "--body", "b", "--bulk").split()[-1])
    assert new_mail > surviving_mail
    postroom(config, "inbound", "deliver", "--recipient", "support@example.com", "--sender", "amy@example.net",
             input="From: Amy <amy@example.net>\r\nTo: support@example.com\r\nSubject: Again\r\n"
                   "Message-Id: <after-upgrade@example.net>\r\n\r\nHello\r\n")
    (tmp_path / "more.csv").write_text("email,name\nlate@example.org,Late\n")
    postroom(config, "list", "import", "news", str(tmp_path / "more.csv"))
    with connect(path) as con:
        assert top_id(con, "inbound_original") > deleted_original
        assert con.execute("SELECT id FROM marketing_contact WHERE email = 'late@example.org'"
                           ).fetchone()[0] > deleted_contact
        assert con.execute('SELECT "x_note" FROM mail_queue_mail WHERE id = ?', (new_mail,)).fetchone() == ("kept",)
        con.execute("DELETE FROM mail_queue_mail WHERE id = ?", (new_mail,))  # the newest goes again
    con.close()
    listing = json.loads(postroom(config, "queue", "list", "--json"))
    assert new_mail not in {m["id"] for m in listing}
    newer = int(postroom(config, "mail", "send", "--to", "newer@example.org", "--subject", "S",
                         "--body", "b", "--bulk").split()[-1])
    assert newer > new_mail


def test_the_rebuild_is_idempotent_and_refuses_to_run_inside_a_transaction(tmp_path):
    path, _ = old_deployment(tmp_path)
    db = SqliteDatabase(str(path), pragmas={"foreign_keys": 1})
    db.connect()
    try:
        assert never_reuse_ids(db, ["mail_queue_mail", "no_such_table"]) == ["mail_queue_mail"]
        assert never_reuse_ids(db, ["mail_queue_mail"]) == []
        assert db.pragma("foreign_keys") == 1  # switched back on
        with db.atomic():
            with pytest.raises(RuntimeError, match="outside a transaction"):
                never_reuse_ids(db, ["partner"])
        assert "AUTOINCREMENT" not in table_sql(db.connection())["partner"]
    finally:
        db.close()


@pytest.mark.heavy
def test_eight_processes_upgrading_an_old_database_at_once_all_succeed_and_it_is_rebuilt_once(tmp_path):
    path, config = old_deployment(tmp_path)
    with connect(path) as con:
        before = snapshot(con)
    con.close()
    procs = [subprocess.Popen([POSTROOM, "--config", str(config), "queue", "list", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    outcomes = [(p.wait(timeout=180), p.stderr.read().decode().strip()) for p in procs]
    assert [o for o in outcomes if o[0] != 0] == []
    with connect(path) as con:
        assert_kept(before, snapshot(con, list(before["rows"])))
        assert {t for t, sql in table_sql(con).items() if "AUTOINCREMENT" in sql} == ID_TABLES
        for component, name in NEW_MIGRATIONS.items():
            assert con.execute(f"SELECT COUNT(*) FROM migrations_{component} WHERE name = ?",
                               (name,)).fetchone() == (1,)
    con.close()
