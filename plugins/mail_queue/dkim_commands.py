"""CLI of DKIM keys: `postroom dkim generate | list | show | remove`."""
import click

from postroom.core.context import get_host
from postroom.core.output import fields, show

from . import dkim_keys

COLUMNS = ["domain", "selector", "algorithm", "record_name", "created_at"]


def _row(key) -> dict:
    return {"domain": key.domain, "selector": key.selector, "algorithm": key.algorithm,
            "record_name": dkim_keys.record_name(key), "record_value": dkim_keys.record_value(key),
            "zone_line": dkim_keys.zone_line(key), "created_at": key.created_at}


def _print_record(key) -> None:
    click.echo(f"Publish this TXT record in the DNS of {key.domain}:")
    click.echo(f"  name:  {dkim_keys.record_name(key)}")
    click.echo(f"  value: {dkim_keys.record_value(key)}")
    click.echo("As a zone-file line:")
    click.echo(f"  {dkim_keys.zone_line(key)}")


@click.group("dkim")
def dkim_group():
    """DKIM signing keys: mail whose From domain (or its parent) has one is signed."""


@dkim_group.command("generate")
@click.argument("domain")
@click.option("--selector", help="Names the key in DNS (default: config dkim_selector, else postroom).")
@click.option("--algorithm", type=click.Choice(dkim_keys.ALGORITHMS), default="rsa-2048", show_default=True,
              help="ed25519 keys are short, but some receivers still verify only RSA.")
@click.pass_context
def dkim_generate(ctx, domain, selector, algorithm):
    """Create the key pair of DOMAIN and print the DNS record to publish."""
    host = get_host(ctx)
    key = dkim_keys.generate(host, domain, selector, algorithm)
    click.echo(f"{algorithm} key for {key.domain} written to {dkim_keys.key_path(host, key)} (mode 0600); "
               f"mail from {key.domain} is signed from now on.")
    _print_record(key)
    click.echo("Then check it with: postroom doctor")


@dkim_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dkim_list(ctx, as_json):
    """The domains that sign their mail."""
    get_host(ctx)
    from .models import DkimKey
    show([_row(k) for k in DkimKey.select().order_by(DkimKey.domain)], COLUMNS, as_json,
         "(no DKIM key: postroom dkim generate DOMAIN)")


@dkim_group.command("show")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dkim_show(ctx, domain, as_json):
    """The DNS record of DOMAIN's key, again."""
    get_host(ctx)
    key = dkim_keys.get(domain)
    if as_json:
        fields(_row(key), True)
    else:
        _print_record(key)


@dkim_group.command("remove")
@click.argument("domain")
@click.pass_context
def dkim_remove(ctx, domain):
    """Delete DOMAIN's key (its private key file too): its mail leaves unsigned."""
    host = get_host(ctx)
    dkim_keys.remove(host, domain)
    click.echo(f"DKIM key of {domain} removed; its mail is no longer signed. Remove its DNS record "
               f"once mail signed with it has been delivered.")
