"""The plugin contract is documented: every hook, the host's or a plugin's, has a
docstring and the project prefix, and a plugin's hooks exist exactly while it is enabled."""
import inspect

import pluggy
import pytest

from postroom.core import hookspecs, plugins as plugin_loader
from postroom.core.plugins import hookimpl, make_plugin_manager

# Hooks that belong to one plugin's domain, by the plugin that declares (and calls) them.
PLUGIN_HOOKS = {
    "mail_queue": {"postroom_mail_prepare", "postroom_reply_to", "postroom_mail_sent",
                   "postroom_mail_failed"},
    "inbound": {"postroom_inbound_recipient", "postroom_inbound_reply", "postroom_inbound_routed",
                "postroom_bounce_received"},
    "mail_marketing": {"postroom_campaign_batch", "postroom_campaign_template_context"},
}


def _specs(namespace) -> dict:
    pm = pluggy.PluginManager("postroom")
    return {name: getattr(namespace, name) for name in dir(namespace)
            if pm.parse_hookspec_opts(namespace, name) is not None}


def _every_hook() -> dict:
    """{hook name: spec function} of the core and of every available plugin."""
    hooks = dict(_specs(hookspecs))
    for plugin in plugin_loader.discover().values():
        namespace = plugin_loader.info_of(plugin).hookspecs
        if namespace is not None:
            for name, fn in _specs(namespace).items():
                assert name not in hooks, f"hook {name} is declared twice"
                hooks[name] = fn
    return hooks


def test_every_hook_is_prefixed_and_documented():
    hooks = _every_hook()
    assert set().union(*PLUGIN_HOOKS.values()) <= set(hooks)
    assert len(hooks) >= 21
    for name, fn in hooks.items():
        assert name.startswith("postroom_"), name
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 60, f"hook {name} lacks a real docstring"
        for arg in inspect.signature(fn).parameters:
            assert arg in doc, f"hook {name}'s docstring does not explain its argument {arg!r}"


def test_core_declares_only_the_hosts_own_hooks():
    declared = set(_specs(hookspecs))
    for plugin, names in PLUGIN_HOOKS.items():
        assert not declared & names, f"core declares {plugin}'s hooks {sorted(declared & names)}"
        namespace = plugin_loader.info_of(plugin_loader.discover()[plugin]).hookspecs
        assert set(_specs(namespace)) == names


def test_a_plugins_hooks_exist_only_once_it_is_enabled(make_host):
    host = make_host()
    assert all(getattr(getattr(host.hook, name, None), "spec", None) is None
               for name in PLUGIN_HOOKS["mail_queue"])
    host.enable_plugin("mail_marketing")  # and mail_queue, which it requires
    for name in PLUGIN_HOOKS["mail_queue"] | PLUGIN_HOOKS["mail_marketing"]:
        assert getattr(host.hook, name).spec is not None, name
    assert getattr(getattr(host.hook, "postroom_bounce_received", None), "spec", None) is None


def test_a_plugin_enabled_again_keeps_its_hooks(make_host):
    host = make_host(plugins=["inbound"])
    host.disable_plugin("inbound")
    host.enable_plugin("inbound")
    assert host.hook.postroom_inbound_routed.spec is not None


def test_an_implementation_of_a_plugins_hook_is_checked_against_its_spec(make_host):
    class WrongArguments:
        @hookimpl(optionalhook=True)
        def postroom_mail_sent(self, host, mails, surprise):
            pass
    host = make_host(extra=[WrongArguments()])  # accepted while mail_queue is not enabled
    with pytest.raises(pluggy.PluginValidationError, match="surprise"):
        host.enable_plugin("mail_queue")


def test_a_misspelled_hook_implementation_fails_fast():
    class Typo:
        @hookimpl
        def postroom_mesage_posted(self, host):
            pass
    pm = make_plugin_manager()
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError, match="postroom_mesage_posted"):
        pm.check_pending()
