"""`postroom vacuum [--dry-run] [--json]`: the daily auto-vacuum, by hand."""
import sys

import click

from postroom.core.context import get_host
from postroom.core.output import table, to_json


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vacuum(ctx, dry_run, as_json):
    """Remove redundant data now (what `Base: Auto-vacuum internal data` does daily).

    Prints what each plugin removed (or would remove) by kind. Exits 1 when a plugin's
    vacuum failed; the other plugins are vacuumed anyway.
    """
    from .service import run_vacuum
    result = run_vacuum(get_host(ctx), dry_run=dry_run,
                        on_chunk=_progress if sys.stderr.isatty() and not dry_run else None)
    if sys.stderr.isatty() and not dry_run:
        click.echo("\r\033[K", err=True, nl=False)
    if as_json:
        click.echo(to_json(result))
    else:
        verb = "would remove" if dry_run else "removed"
        rows = []
        for e in result["plugins"]:
            for kind, n in e["removed"].items():
                rows.append({"plugin": e["plugin"], "kind": kind, verb.replace(" ", "_"): n})
            if not e["removed"] and not e["error"]:
                rows.append({"plugin": e["plugin"], "kind": "-", verb.replace(" ", "_"): 0})
        click.echo(table(rows, ["plugin", "kind", verb.replace(" ", "_")]))
        click.echo(f"{verb} {result['removed']} row(s) in {result['seconds']:.2f}s"
                   + (f"; {result['remaining']} more to do (run it again)" if result["remaining"] else ""))
    for e in result["plugins"]:
        if e["error"]:
            click.echo(f"Error: the vacuum of {e['plugin']} failed and was rolled back: {e['error']}",
                       err=True)
    if result["errors"]:
        ctx.exit(1)


def _progress(entry):
    """One self-overwriting line on a terminal: plugin, rows removed so far, chunks."""
    done = sum(entry["removed"].values())
    click.echo(f"\r\033[K{entry['plugin']}: {done} removed in {entry['chunks']} chunk(s)...",
               err=True, nl=False)
