"""Two indexes of the trace table that every campaign paid for on each trace: the one on
`campaign_id` alone repeated the first column of the unique (campaign, contact_id) index,
which serves those lookups (and ON DELETE CASCADE); the one on (status, created_at) served
only the vacuum's canceled traces by age, yet every trace written added an entry and every
`sent` UPDATE moved it. The same index, partial (canceled traces only), takes its place:
the same statement as the model's, for databases made before it. (Its status column
holds one value; it is there because SQLite's planner, without statistics, takes an
equality on the first column over the id range the vacuum also gives, as it took the
old index, while it preferred that id range to a partial index on created_at alone.)"""


def up(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "marketing_trace_campaign_id"')
    db.execute_sql('DROP INDEX IF EXISTS "marketing_trace_status_created_at"')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "marketing_trace_canceled_created_at" ON "marketing_trace" '
                   '("status", "created_at") WHERE ("status" = \'canceled\')')
