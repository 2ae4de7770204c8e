"""core.db.run_prepared: a statement's SQL rendered once, then run with new values each
time, gives what peewee would (on both engines)."""
import datetime as dt

from postroom.core.db import run_prepared
from postroom.core.models import Partner


def _renamed(host, new_name, partner_id, since):
    return run_prepared(host.db, "test-rename", lambda name, i, at: Partner.update(name=name).where(
        (Partner.id == i) & (Partner.id > 0) & (Partner.created_at <= at)).returning(Partner.id),
        new_name, partner_id, since).fetchall()


def test_a_prepared_statement_takes_each_call_s_own_values_and_keeps_its_constants(make_host, db_url):
    host = make_host(db_url=db_url)
    now = host.clock.now()
    ann = Partner.create(name="Ann", email="ann@example.com", created_at=now)
    bob = Partner.create(name="Bob", email="bob@example.com", created_at=now)
    later = now + dt.timedelta(days=1)
    with host.transaction():
        assert _renamed(host, "Ann Smith", ann.id, later) == [(ann.id,)]
        assert _renamed(host, "Bob Jones", bob.id, later) == [(bob.id,)]
        # A time before both partners existed matches neither: the datetime is a value too.
        assert _renamed(host, "Nobody", ann.id, later - dt.timedelta(days=400)) == []
    assert [p.name for p in Partner.select().where(Partner.id.in_([ann.id, bob.id])).order_by(Partner.id)] \
        == ["Ann Smith", "Bob Jones"]
