"""Operator and login-attempt ids are never handed out twice (see core.row_ids)."""

atomic = False  # the rebuild runs its own transaction, with foreign keys off

TABLES = ("console_operator", "console_login_attempt")


def up(migrator, db):
    from postroom.core.row_ids import never_reuse_ids
    never_reuse_ids(db, TABLES)
