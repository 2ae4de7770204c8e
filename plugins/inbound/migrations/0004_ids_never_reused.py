"""Alias, original and decision ids are never handed out twice (see postroom.core.row_ids):
`inbound export ID` taken from an old decision-log line no longer exports another message."""

atomic = False  # the rebuild runs its own transaction, with foreign keys off

TABLES = ("inbound_alias", "inbound_original", "inbound_decision")
# Originals are vacuumed before the decisions that name them.
FLOORS = {"inbound_original": ["SELECT MAX(original_id) FROM inbound_decision"]}


def up(migrator, db):
    from postroom.core.row_ids import never_reuse_ids
    never_reuse_ids(db, TABLES, FLOORS)
