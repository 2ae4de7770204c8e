"""Printing for people (aligned tables) and for scripts (`--json`)."""
import datetime as dt
import json

import click


def _plain(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def to_json(data) -> str:
    return json.dumps(data, default=_plain, indent=2, ensure_ascii=False)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value).replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."


def table(rows: list[dict], columns: list[str], empty: str = "(none)") -> str:
    """An aligned text table of `columns` taken from each row."""
    if not rows:
        return empty
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def show(rows, columns, as_json: bool, empty: str = "(none)") -> None:
    """A listing: a JSON array with --json, else a table."""
    if as_json:
        click.echo(to_json([{c: r.get(c) for c in columns} | {k: v for k, v in r.items()} for r in rows]))
    else:
        click.echo(table(rows, columns, empty))


def fields(obj: dict, as_json: bool, order: list[str] | None = None) -> None:
    """One object: `key: value` lines, or a JSON object."""
    if as_json:
        click.echo(to_json(obj))
        return
    keys = order or list(obj)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = obj.get(key)
        if isinstance(value, (list, dict)):
            continue
        click.echo(f"{key.ljust(width)}  {_cell(value) if not isinstance(value, str) else value}")


def created(label: str, new_id) -> None:
    """Creation commands end with the new id as the last word, for scripts."""
    click.echo(f"{label} {new_id}")
