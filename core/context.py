"""How a click command gets its host, without importing the CLI module.

The root group (`postroom.cli`) leaves either a host (tests pass one as `obj`) or nothing
in its context; `get_host` opens the deployment from `--config` on first use and closes
it when the command ends. Plugins' commands use `pass_host` (or `get_host(ctx)`).
"""
import functools

import click

from .config import Config
from .host import Host

HOST_KEY = "postroom.host"
CREATES_DATABASE = "postroom.creates_database"  # set by `postroom init`, the one command that may


def get_host(ctx: click.Context) -> Host:
    """The host for this invocation: the one a test passed as `obj`, or one opened from the
    config (and closed when the command ends)."""
    root = ctx.find_root()
    if isinstance(root.obj, Host):
        return root.obj
    host = root.meta.get(HOST_KEY)
    if host is None:
        host = Host(Config.load(root.params.get("config")))
        root.call_on_close(host.close)
        warn_once(root, host.config_warnings)
        host.open(create=bool(root.meta.get(CREATES_DATABASE)))
        root.meta[HOST_KEY] = host
    return host


def warn_once(root, warnings):
    """Print the config's warnings on stderr, once per invocation."""
    if not root.meta.get("postroom.warned"):
        root.meta["postroom.warned"] = True
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)


def pass_host(f):
    """Decorate a click command so that it receives the deployment's `Host` as its first
    argument (like `click.make_pass_decorator`, but opening the host from `--config` when
    no test handed one in):

        @click.command("tickets")
        @pass_host
        def tickets(host, as_json): ...
    """
    @click.pass_context
    def command(ctx, *args, **kwargs):
        return ctx.invoke(f, get_host(ctx), *args, **kwargs)
    return functools.update_wrapper(command, f)
