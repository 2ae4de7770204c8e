"""The decision log's index on `sender` alone only repeated the first column of its loop
protection index (sender, counts, created_at), which serves every lookup by sender; the
duplicate cost a page write per batch of stored messages."""


def up(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "inbound_decision_sender"')
