"""Message subtypes: the subtype of a message, the subset a follower subscribed to."""


def up(migrator, db):
    for table, column, kind in (("message", "subtype", "VARCHAR(64)"), ("follower", "subtypes", "VARCHAR(1024)")):
        if column not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')
