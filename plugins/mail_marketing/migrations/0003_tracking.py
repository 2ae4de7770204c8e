"""Open/click tracking: what a campaign tracks, and each trace's first open and click."""
import peewee as pw

from postroom.core.db import UTCDateTimeField

COLUMNS = {
    "marketing_campaign": {"track": pw.CharField(max_length=32, default="")},
    "marketing_trace": {"opened_at": UTCDateTimeField(null=True), "clicked_at": UTCDateTimeField(null=True)},
}


def up(migrator, db):
    # Databases made after this migration was written already have the columns (0001
    # creates the tables from the current models).
    ops = []
    for table, columns in COLUMNS.items():
        present = {c.name for c in db.get_columns(table)}
        ops += [migrator.add_column(table, name, field) for name, field in columns.items() if name not in present]
    if ops:
        migrator.migrate(*ops)
