"""Postroom: the mail backbone of a business application.

This file is the package `postroom` (setup.cfg maps the repository root onto it), and
`__all__` below is the public surface: what plugins and embedding applications may import,
each with its docstring as its contract. Everything else (`postroom.core.*`,
`postroom.plugins.*`, `postroom.cli`) is internal and may change.

For plugins: `hookimpl`, `hookspec`, `PluginInfo`, `RecordType`, `ActionSpec`, `Check`,
`Host`, `pass_host` / `get_host` for click commands, the "mail" service's contract
`MailService` (`mail_service(host)`), and the error classes.

For console screens (routes registered through `postroom_http_routes`): `host_of`,
`run_db`, `render_screen`, `form_value`, `form_values`, `screen_action`, `screen_page`,
`screen_done`, `audit_action`, `screen_download`.

For applications: `open_host`, then `create_partner`, `find_partner`, `create_record`,
`get_record`, `follow`, `unfollow`, `post_message`, `update_record`, `send_mail`; group several in
`with host.transaction():`.
"""
# Absolute imports only: pytest (and any tool that imports this file by its path) may load
# it under another name, and a relative import would then fail or load a second copy of
# every module.
import importlib

from postroom.core.api import (create_partner, create_record, find_partner, follow, get_record,
                               open_host, post_message, send_mail, unfollow, update_record)
from postroom.core.context import get_host, pass_host
from postroom.core.doctor import Check
from postroom.core.errors import (ConfigError, Conflict, DatabaseUnavailable, InvalidInput, NotFound,
                                  PostroomError)
from postroom.core.hookspecs import hookspec
from postroom.core.host import Host
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.records import RecordType
from postroom.core.scheduler import ActionSpec
from postroom.core.subtypes import Subtype
from postroom.core.services import MailService, mail as mail_service

# The console's screen helpers bring in the web stack (Starlette, Jinja2, argon2): loaded on
# first use, so an application that only posts messages does not pay for them.
_LAZY = {
    "host_of": ("postroom.core.web", "host_of"), "run_db": ("postroom.core.web", "db"),
    "render_screen": ("postroom.core.console.frame", "render"),
    "form_value": ("postroom.core.console.frame", "form_value"),
    "form_values": ("postroom.core.console.frame", "form_values"),
    "screen_action": ("postroom.core.console.frame", "acting"),
    "screen_page": ("postroom.core.console.frame", "viewing"),
    "screen_done": ("postroom.core.console.frame", "done"),
    "audit_action": ("postroom.core.console.frame", "audit"),
    "screen_download": ("postroom.core.console.frame", "download"),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'postroom' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


__all__ = [
    # writing a plugin
    "hookimpl", "hookspec", "PluginInfo", "RecordType", "Subtype", "ActionSpec", "Check", "Host",
    "pass_host", "get_host", "MailService", "mail_service",
    # console screens
    "host_of", "run_db", "render_screen", "form_value", "form_values", "screen_action",
    "screen_page", "screen_done", "audit_action", "screen_download",
    # errors (each carries the CLI's exit code)
    "PostroomError", "InvalidInput", "NotFound", "Conflict", "ConfigError", "DatabaseUnavailable",
    # embedding Postroom in an application
    "open_host", "create_partner", "find_partner", "create_record", "get_record", "follow",
    "unfollow", "post_message", "update_record", "send_mail",
]
