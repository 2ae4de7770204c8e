"""Enabling and disabling plugins: stored per deployment, with requirements."""
import importlib

import pytest

from postroom.core.errors import Conflict, NotFound
from postroom.core.host import Host
from postroom.core.models import PluginState
from tests.core.plugin_fixtures import Base, Dependent, Widget


@pytest.fixture
def available():
    return {"base_fx": Base(), "dependent_fx": Dependent()}


def test_enabling_a_plugin_enables_what_it_requires_and_runs_its_migrations(make_host, db_url, available):
    host = make_host(db_url=db_url, available=available)
    assert host.enable_plugin("dependent_fx") == ["base_fx", "dependent_fx"]
    assert Widget.table_exists()
    Widget.create(label="made by a migration")
    assert {s.name for s in PluginState.select().where(PluginState.enabled)} == {"base_fx", "dependent_fx"}
    assert "fx.thing" in host.record_types


def test_enabled_set_is_shared_by_every_host_of_the_deployment(make_host, db_url, available):
    host = make_host(db_url=db_url, available=available, plugins=["base_fx"])
    other = Host(host.config, clock=host.clock, available=available, log_to_file=False).open()
    try:
        assert other.enabled == ["base_fx"]
        assert "fx.thing" in other.record_types
    finally:
        other.close()


def test_disabling_a_required_plugin_is_refused_with_the_reason(make_host, db_url, available):
    host = make_host(db_url=db_url, available=available, plugins=["dependent_fx"])
    with pytest.raises(Conflict, match="dependent_fx requires it"):
        host.disable_plugin("base_fx")
    host.disable_plugin("dependent_fx")
    host.disable_plugin("base_fx")
    assert host.enabled == []
    assert "fx.thing" not in host.record_types


def test_a_disabled_plugins_hooks_do_not_fire(make_host, available):
    from postroom.core import chatter, records
    host = make_host(available=available, plugins=["dependent_fx"])
    rec = records.create_record(host, "generic", "R")
    chatter.post_message(host, rec, "one")
    host.disable_plugin("dependent_fx")
    chatter.post_message(host, rec, "two")
    assert len(available["dependent_fx"].posted) == 1


def test_unknown_plugin_is_refused_with_the_available_names(make_host, available):
    host = make_host(available=available)
    with pytest.raises(NotFound, match="unknown plugin 'nope'.*base_fx, dependent_fx"):
        host.enable_plugin("nope")


def test_enabling_twice_changes_nothing(make_host, available):
    host = make_host(available=available, plugins=["base_fx"])
    assert host.enable_plugin("base_fx") == []


def test_plugin_commands_exist_only_while_enabled(make_host, available, cli_run):
    host = make_host(available=available)
    assert cli_run(host, "fx-hello").exit_code != 0
    cli_run(host, "plugins", "enable", "dependent_fx")
    result = cli_run(host, "fx-hello")
    assert result.exit_code == 0 and "hello from dependent_fx" in result.output
    listing = cli_run(host, "plugins", "list", "--json")
    import json
    rows = {r["name"]: r for r in json.loads(listing.output)}
    assert rows["dependent_fx"]["enabled"] and rows["dependent_fx"]["requires"] == ["base_fx"]


def test_disabling_a_required_plugin_from_the_cli_prints_one_line_and_fails(make_host, available, cli_run):
    host = make_host(available=available, plugins=["dependent_fx"])
    result = cli_run(host, "plugins", "disable", "base_fx")
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0 and "requires it" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_builtin_and_entry_point_plugins_go_through_one_loader():
    from importlib.metadata import entry_points

    from postroom.core import plugins
    found = plugins.discover()
    builtins = {"mail_queue", "mail_marketing", "inbound", "auto_vacuum"}
    assert builtins <= set(found)
    for name, module in found.items():
        assert plugins.info_of(module).name == name
    # The installed distribution declares the builtins in the entry-point group too, and
    # the loader de-duplicates them: each builtin is found once, as the same module.
    declared = {ep.name: ep.value for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert {n: declared.get(n) for n in builtins} == {n: f"postroom.plugins.{n}" for n in builtins}
    assert all(found[n] is importlib.import_module(f"postroom.plugins.{n}") for n in builtins)
