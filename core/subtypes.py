"""Message subtypes (Odoo's mail.message.subtype): what a post is about, so followers can
subscribe to a subset ("Discussions" but not "Record updated").

The core registers `discussion` (comments), `note` (internal notes: followers are never
notified of those) and `tracking` (tracked field changes, see `records.update_record`);
plugins add theirs through `postroom_message_subtypes`. A follower who chose no subset
gets every subtype whose `default` flag is set. Followers' subsets are stored as
`,name,name,` so a post's fan-out stays one INSERT … SELECT (a LIKE on that column).
"""
import dataclasses

from .errors import InvalidInput

DISCUSSION, NOTE, TRACKING = "discussion", "note", "tracking"


@dataclasses.dataclass(frozen=True)
class Subtype:
    """`name` (letters, digits, `_`, `.`), a `label` for people, `default`: followers who
    chose no subset get it."""
    name: str
    label: str = ""
    default: bool = True


CORE = (Subtype(DISCUSSION, "Discussions"), Subtype(NOTE, "Note", default=False),
        Subtype(TRACKING, "Record updated"))


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_." for c in name):
        raise InvalidInput(f"a subtype name is letters, digits, '_' and '.', not {name!r}")
    return name


def get(host, name: str) -> Subtype:
    if name not in host.subtypes:
        raise InvalidInput(f"unknown subtype {name!r}; known: {', '.join(sorted(host.subtypes))}")
    return host.subtypes[name]


def encode(host, names) -> str | None:
    """A follower's chosen subset as stored (None: the defaults)."""
    if names is None:
        return None
    chosen = sorted({get(host, n.strip()).name for n in names if n.strip()})
    if not chosen:
        raise InvalidInput("name at least one subtype (see: postroom record subtypes)")
    return "," + ",".join(chosen) + ","


def decode(host, stored: str | None) -> list[str]:
    if stored is None:
        return sorted(s.name for s in host.subtypes.values() if s.default)
    return [n for n in stored.split(",") if n]
