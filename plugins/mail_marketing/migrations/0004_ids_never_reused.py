"""List, contact, campaign, trace (...) ids are never handed out twice (see
postroom.core.row_ids)."""

atomic = False  # the rebuild runs its own transaction, with foreign keys off

TABLES = ("marketing_list", "marketing_contact", "marketing_blacklist", "marketing_bounce",
          "marketing_campaign", "marketing_campaign_list", "marketing_trace")
# Contact ids live on in traces and in a campaign's cursor (contacts above it are still to
# be mailed): a reused id would be skipped or mailed twice.
FLOORS = {"marketing_contact": ["SELECT MAX(contact_id) FROM marketing_trace",
                                'SELECT MAX("cursor") FROM marketing_campaign']}


def up(migrator, db):
    from postroom.core.row_ids import never_reuse_ids
    never_reuse_ids(db, TABLES, FLOORS)
