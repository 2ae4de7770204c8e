"""Ids are never handed out twice (SQLite AUTOINCREMENT; see core.row_ids)."""

# The rebuild runs its own IMMEDIATE transaction with foreign keys off, which SQLite allows
# only outside a transaction.
atomic = False

TABLES = ("partner", "record", "message", "follower", "notification", "cron_action",
          "cron_trigger", "attachment", "template")
FLOORS = {"message": ["SELECT MAX(res_id) FROM attachment WHERE res_model = 'message'"]}


def up(migrator, db):
    from postroom.core.row_ids import never_reuse_ids
    never_reuse_ids(db, TABLES, FLOORS)
