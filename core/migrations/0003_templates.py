"""Operators' templates: named mail templates and per-record-type notification layouts."""


def up(migrator, db):
    from postroom.core.models import Template
    db.create_tables([Template], safe=True)
