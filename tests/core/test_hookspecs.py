"""The plugin contract is documented: every hook has a docstring and the project prefix."""
import inspect

import pluggy

from postroom.core import hookspecs


def _hooks():
    return {name: fn for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "postroom_spec")}


def test_every_hook_is_prefixed_and_documented():
    hooks = _hooks()
    assert len(hooks) >= 10
    for name, fn in hooks.items():
        assert name.startswith("postroom_"), name
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 60, f"hook {name} lacks a real docstring"
        for arg in inspect.signature(fn).parameters:
            assert arg in doc, f"hook {name}'s docstring does not explain its argument {arg!r}"


def test_a_misspelled_hook_implementation_fails_fast():
    from postroom.core.plugins import hookimpl, make_plugin_manager

    class Typo:
        @hookimpl
        def postroom_mesage_posted(self, host):
            pass
    pm = make_plugin_manager()
    pm.register(Typo())
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        assert "postroom_mesage_posted" in str(exc)
    else:
        raise AssertionError("check_pending accepted an unknown hook")
