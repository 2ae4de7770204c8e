"""`postroom operator`: the console's accounts (add, passwd, remove, list)."""
import click

from ..output import show
from . import operators
from .models import ROLES


def _host(ctx):
    from ..context import get_host
    return get_host(ctx)


def _password() -> str:
    # Prompted (hidden, twice), never an argument: arguments show in `ps` and shell history.
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group("operator")
def operator():
    """Console operators (argon2-hashed passwords; admin or read-only)."""


@operator.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True,
              help="readonly: may look at every screen but not act.")
@click.pass_context
def operator_add(ctx, email, role):
    """Create an operator; the password is asked for (twice)."""
    op = operators.add(_host(ctx), email, _password(), role)
    click.echo(f"operator {op.email} added ({op.role})")


@operator.command("passwd")
@click.argument("email")
@click.pass_context
def operator_passwd(ctx, email):
    """Change an operator's password; the operator's open sessions end."""
    op = operators.set_password(_host(ctx), email, _password())
    click.echo(f"operator {op.email}: password changed; open sessions ended")


@operator.command("remove")
@click.argument("email")
@click.pass_context
def operator_remove(ctx, email):
    """Delete an operator and end their sessions."""
    operators.remove(_host(ctx), email)
    click.echo(f"operator {email.strip().lower()} removed")


@operator.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def operator_list(ctx, as_json):
    """Operators and their roles."""
    show(operators.listing(_host(ctx)), ["email", "role", "created_at", "password_changed_at"], as_json,
         "(no operators: postroom operator add EMAIL)")
