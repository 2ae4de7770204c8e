"""cli.py merges a plugin group named like a core group into the core group."""
import click

from postroom.core.plugins import hookimpl


class _Plugin:
    @hookimpl
    def postroom_cli_commands(self, cli):
        @click.group("message")
        def message():
            """Plugin half."""

        @message.command("hello")
        def hello():
            click.echo("hello from a plugin")

        @message.command("show")
        def show():
            click.echo("plugin show must not win")
        cli.add_command(message)


def test_a_plugin_group_named_like_a_core_group_adds_its_subcommands(make_host, cli_run):
    host = make_host(extra=[_Plugin()])
    assert cli_run(host, "message", "hello").output.strip() == "hello from a plugin"
    help_text = cli_run(host, "message", "--help").output
    assert "hello" in help_text and "post" in help_text and "Chatter messages." in help_text


def test_a_core_subcommand_wins_a_name_clash_with_a_plugin(make_host, cli_run):
    host = make_host(extra=[_Plugin()])
    result = cli_run(host, "message", "show", "999")
    assert "plugin show" not in result.output
    assert result.exit_code != 0
