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
from .core.api import (create_partner, create_record, find_partner, follow, get_record,
                       open_host, post_message, send_mail, unfollow, update_record)
from .core.console.frame import (acting as screen_action, audit as audit_action, done as screen_done,
                                 download as screen_download, form_value, form_values,
                                 render as render_screen, viewing as screen_page)
from .core.context import get_host, pass_host
from .core.doctor import Check
from .core.errors import (ConfigError, Conflict, DatabaseUnavailable, InvalidInput, NotFound,
                          PostroomError)
from .core.hookspecs import hookspec
from .core.host import Host
from .core.plugins import PluginInfo, hookimpl
from .core.records import RecordType
from .core.scheduler import ActionSpec
from .core.subtypes import Subtype
from .core.services import MailService, mail as mail_service
from .core.web import db as run_db, host_of

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
