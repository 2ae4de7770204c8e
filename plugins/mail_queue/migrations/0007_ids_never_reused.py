"""Mail, server and DKIM key ids are never handed out twice (see postroom.core.row_ids):
an auto-deleted sent mail's id no longer names the next mail in the log."""

atomic = False  # the rebuild runs its own transaction, with foreign keys off

TABLES = ("mail_queue_mail", "mail_queue_server", "mail_queue_dkim_key")
# Ids held elsewhere after their rows went: a direct mail's attachments name their mail,
# and mails name the chatter notifications they deliver (read ones are vacuumed).
FLOORS = {
    "mail_queue_mail": ["SELECT MAX(res_id) FROM attachment WHERE res_model = 'mail_queue.mail'"],
    "notification": ["SELECT MAX(notification_id) FROM mail_queue_mail"],
}


def up(migrator, db):
    from postroom.core.row_ids import never_reuse_ids
    never_reuse_ids(db, TABLES, FLOORS)
