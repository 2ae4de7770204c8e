"""The attachment store: content rows (one per checksum) and attachment rows."""


def up(migrator, db):
    from postroom.core.models import Attachment, AttachmentContent
    db.create_tables([AttachmentContent, Attachment], safe=True)
