"""Decision log: envelope sender and client columns for loop protection, a repeat count
for aggregated refusals, and the sender authentication result."""
import peewee as pw

COLUMNS = {
    "envelope_sender": pw.CharField(max_length=320, default=""),
    "client": pw.CharField(max_length=64, default=""),
    "repeat": pw.IntegerField(default=1),
    "auth": pw.TextField(default=""),
}


def up(migrator, db):
    # Databases made after this migration was written already have the columns (0001
    # creates the tables from the current models).
    present = {c.name for c in db.get_columns("inbound_decision")}
    ops = [migrator.add_column("inbound_decision", name, field)
           for name, field in COLUMNS.items() if name not in present]
    if ops:
        migrator.migrate(*ops)
    for name in ("envelope_sender", "client"):
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS "inbound_decision_{name}_counts_created_at" '
                       f'ON "inbound_decision" ("{name}", "counts", "created_at")')
