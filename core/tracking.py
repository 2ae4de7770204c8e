"""Tracked values (Odoo's tracking): `update_record` writes a record's values and posts one
chatter entry listing each tracked value's old → new, notifying the followers subscribed
to the `tracking` subtype."""
import html

from . import chatter, subtypes
from .errors import InvalidInput
from .models import Record

MAX_VALUE = 1000


def update_record(host, record: Record, values: dict, author=None):
    """Write `values` into the record (merged with what it has) and, when a value its
    record type tracks changed, post the changes on its chatter, in one transaction.
    Returns the tracking message, or None when no tracked value changed."""
    if not isinstance(values, dict) or not values:
        raise InvalidInput("give at least one value to update (key=value)")
    for key, value in values.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInput(f"a value name is a word (letters, digits, _), not {key!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(f"value {key} must be text, a number or true/false")
        if isinstance(value, str) and len(value) > MAX_VALUE:
            raise InvalidInput(f"value {key} is longer than {MAX_VALUE} characters")
    rtype = host.record_types.get(record.model)
    tracked = rtype.tracked if rtype is not None else ()
    with host.transaction():
        old = dict(Record.get_by_id(record.id).values or {})
        changes = [(k, old.get(k), values[k]) for k in tracked if k in values and old.get(k) != values[k]]
        record.values = old | values
        Record.update(values=record.values).where(Record.id == record.id).execute()
        if not changes:
            return None
        items = "".join(f"<li>{html.escape(k)}: {html.escape(_shown(a))} → {html.escape(_shown(b))}</li>"
                        for k, a, b in changes)
        return chatter.post_message(host, record, f"<ul>{items}</ul>", body_is_html=True, author=author,
                                    message_type="notification", subtype=subtypes.TRACKING)


def _shown(value) -> str:
    return "(empty)" if value is None or value == "" else str(value)
