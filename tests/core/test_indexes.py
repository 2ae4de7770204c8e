"""Indexes that only repeated the leading column of a unique or covering index on their
table are gone (each cost a page write in every transaction that adds rows: the inbound
gateway's batches), and the lookups they served use the longer index.

Not every such index is a duplicate: an index on `campaign_id` alone also keeps each
campaign's rows in id order (SQLite's rowid follows the key), which a keyset walk
`WHERE campaign_id = ? AND id > ? ORDER BY id` needs, so those stay."""

# dropped index: (table, the index that serves its lookups)
DROPPED = {"follower_record_id": ("follower", ["record_id", "partner_id"]),
           "notification_message_id": ("notification", ["message_id", "partner_id"]),
           "inbound_decision_sender": ("inbound_decision", ["sender", "counts", "created_at"])}


def test_indexes_that_repeat_a_longer_index_are_not_created_on_either_engine(make_host, db_url):
    host = make_host(plugins=["inbound"], db_url=db_url)
    for name, (table, serving) in DROPPED.items():
        indexes = {i.name: i.columns for i in host.db.get_indexes(table)}
        assert name not in indexes
        assert serving in indexes.values(), (table, indexes)


def test_lookups_by_the_leading_column_still_use_an_index(make_host):
    host = make_host(plugins=["inbound"])  # SQLite's plans for the lookups (and ON DELETE CASCADE)
    for sql in ('SELECT * FROM "follower" WHERE "record_id" = 1',
                'SELECT * FROM "notification" WHERE "message_id" = 1',
                'SELECT * FROM "inbound_decision" WHERE "sender" = \'a@example.com\''):
        plan = " ".join(str(row[-1]) for row in host.db.execute_sql("EXPLAIN QUERY PLAN " + sql).fetchall())
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)
