"""Aliases: which sender authentication they require (`alias add --require-auth`)."""
import peewee as pw


def up(migrator, db):
    if "require_auth" not in {c.name for c in db.get_columns("inbound_alias")}:
        migrator.migrate(migrator.add_column("inbound_alias", "require_auth",
                                             pw.CharField(max_length=8, null=True)))
