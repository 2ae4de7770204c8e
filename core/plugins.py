"""Finding plugins and building the plugin manager.

Builtins and third-party plugins go through one loader: a plugin is a module or object with
a `PLUGIN = PluginInfo(...)` attribute and hook implementations. A plugin that owns a
domain also owns that domain's hooks (pytest's `pytest_addhooks`): it names its hook
specifications in `PluginInfo(hookspecs=...)` and `register` adds them to the manager
before the plugin's implementations, so they exist exactly when the plugin is enabled.
Builtins are listed here
*and* in setup.cfg's `postroom.plugins` entry-point group; the loader de-duplicates them,
so a source checkout that was never pip-installed still finds its builtins.
"""
import dataclasses
import importlib
import logging
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import Conflict, NotFound

class HookimplMarker(pluggy.HookimplMarker):
    """`@hookimpl` marks a function (or method) as the implementation of the Postroom hook
    of the same name; it may accept any subset of the hook's arguments.
    `@hookimpl(optionalhook=True)` implements a hook another plugin declares, so this
    plugin still loads where that one is disabled; `tryfirst` / `trylast` order calls."""

    __slots__ = ()


hookimpl = HookimplMarker("postroom")
ENTRY_POINT_GROUP = "postroom.plugins"
BUILTIN = ("postroom.plugins.mail_queue", "postroom.plugins.mail_marketing", "postroom.plugins.inbound", "postroom.plugins.auto_vacuum")
log = logging.getLogger("postroom.plugins")


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What a plugin says about itself.

    `requires`: names of the plugins it needs (enabled first, disabled last).
    `hookspecs`: a module or class of `@hookspec` functions for the hooks this plugin
    *calls* and others may implement (e.g. mail_queue's `postroom_mail_sent`); other
    plugins implement them with `@hookimpl(optionalhook=True)`, so they still load when
    the owner is disabled.
    `config`: the tuple of `core.config.Key`s it reads (see core/config.py, "How to add a
    key"); they are checked at every start, enabled or not.
    """
    name: str
    description: str = ""
    requires: tuple = ()
    hookspecs: object = None
    config: tuple = ()


def info_of(plugin) -> PluginInfo | None:
    return getattr(plugin, "PLUGIN", None)


def discover(problems: list | None = None) -> dict:
    """All available plugins by name: builtins first, then the entry-point group.

    A third-party plugin that fails to import is logged (and described in `problems`, when
    given) and left out, never fatal: one broken package must not take the operator's CLI
    down with it.
    """
    found = {}

    def problem(text, *args):
        log.warning(text, *args)
        if problems is not None:
            problems.append(text % args)
    for modname in BUILTIN:
        module = importlib.import_module(modname)
        if info_of(module):  # a plugin package whose issue has not landed yet has no PLUGIN
            found[info_of(module).name] = module
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import-time failure of foreign code
            problem("plugin entry point %s could not be loaded: %s: %s", ep.value, type(exc).__name__, exc)
            continue
        info = info_of(plugin)
        if info is None:
            problem("plugin entry point %s has no PLUGIN = PluginInfo(...); ignored", ep.value)
            continue
        if info.name in found and found[info.name] is not plugin:
            problem("plugin name %r is provided twice (%s); the first wins", info.name, ep.value)
            continue
        found[info.name] = plugin
    return found


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with Postroom's hook specs; the host keeps it (nothing global)."""
    pm = pluggy.PluginManager("postroom")
    pm.add_hookspecs(hookspecs)
    return pm


def register(pm: pluggy.PluginManager, plugin, name: str) -> None:
    """Register `plugin` under `name`: its own hook specifications first (once per manager,
    so a plugin enabled again after a disable is fine), then its implementations."""
    specs = getattr(info_of(plugin), "hookspecs", None)
    if specs is not None:
        names = [n for n in dir(specs) if pm.parse_hookspec_opts(specs, n) is not None]
        if not all(getattr(getattr(pm.hook, n, None), "spec", None) is not None for n in names):
            pm.add_hookspecs(specs)
    if pm.get_plugin(name) is None:
        pm.register(plugin, name=name)


def with_requirements(available: dict, names) -> list:
    """`names` plus everything they need, dependencies first; unknown names refused."""
    order = []

    def visit(name, chain):
        if name in order:
            return
        if name not in available:
            known = ", ".join(sorted(available)) or "none"
            wanted = f" (needed by {chain[-1]})" if chain else ""
            raise NotFound(f"unknown plugin {name!r}{wanted}; available: {known}")
        if name in chain:
            raise Conflict(f"plugin requirements form a cycle: {' -> '.join(chain + [name])}")
        for req in info_of(available[name]).requires:
            visit(req, chain + [name])
        order.append(name)

    for name in names:
        visit(name, [])
    return order


def dependents(available: dict, enabled, name) -> list:
    """Enabled plugins that require `name`, directly."""
    return sorted(n for n in enabled if n in available and name in info_of(available[n]).requires)
