"""DKIM signing keys (one per domain; the private half is a file under data_dir)."""


def up(migrator, db):
    from postroom.plugins.mail_queue.models import DkimKey
    db.create_tables([DkimKey], safe=True)
