"""The INI configuration (`postroom.cfg`, like odoo.conf), section `[postroom]`.

Found from `--config PATH`, else `$POSTROOM_CONFIG`, else `./postroom.cfg` if present, else
defaults. Relative paths in a file are taken relative to that file's folder.

Every key is declared, with its type, range and default, and checked when the host is
built (so by every command, before anything runs): a bad value is a `ConfigError` (exit
78) naming the key, the file and what is allowed; an unknown key is a warning that
suggests the closest known one (and a `doctor` finding).

How to add a key
----------------
Core keys are `CORE_KEYS` below. A plugin declares its own in its `PluginInfo`:

    from postroom.core.config import Key

    KEYS = (   # e.g. in plugins/inbound/settings.py
        Key("inbound_max_size", int, default=25 * 1024 * 1024, min=1, max=2**31,
            help="bytes; larger messages get 552 5.3.4"),
        Key("inbound_host", str, default="127.0.0.1", help="where the gateway listens"),
    )
    PLUGIN = PluginInfo("inbound", "...", config=settings.KEYS)

and reads it, typed and already validated, with `host.config.value("inbound_max_size")`.
Types: `int`, `float`, `bool`, `str`, `list` (comma or space separated words). Options:
`min`/`max` (numbers), `choices` (str; compared case-insensitively, returned as written in
`choices`), `empty=False` (str/list must not be empty), `secret=True` (masked by
`postroom config check`), `check=fn` (fn(value) raises ValueError("what is allowed") for
anything else, e.g. a domain name), `help` (one line; `config check` and the README say
it). `default=None` means "not set" (the code decides, e.g. the admin's address).
Keys of every *available* plugin are checked, enabled or not, so enabling a plugin never
reveals a config error late. Add the key to the README's table of its section.
"""
import configparser
import dataclasses
import difflib
import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError, first_line

SECTION = "postroom"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
               list: "a list of words"}


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: name, type, default, limits and a one-line help."""
    name: str
    type: type = str
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    empty: bool = True
    secret: bool = False
    check: Callable | None = None
    help: str = ""
    what: str = ""  # what `check` allows, in words ("an email address"), for messages

    def allowed(self) -> str:
        """What is allowed, in words, for error messages and `config check`."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.type in (int, float):
            text = _TYPE_WORDS[self.type]
            if self.min is not None and self.max is not None:
                text += f" from {_num(self.min)} to {_num(self.max)}"
            elif self.min is not None:
                text += f" of at least {_num(self.min)}"
            elif self.max is not None:
                text += f" of at most {_num(self.max)}"
        elif self.what:
            text = self.what
        else:
            text = _TYPE_WORDS.get(self.type, "text")
            if not self.empty:
                text = "a non-empty " + text[2:] if text.startswith("a ") else "non-empty " + text
        if self.default is not None and self.default != [] and self.default != "":
            text += f" (default {format_value(self.default)})"
        return text

    def parse(self, raw: str):
        """The typed value of `raw`; ValueError saying why it is not allowed."""
        text = raw.strip()
        if CONTROL.search(text):
            raise ValueError("control characters are not allowed")
        if self.type is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("not true or false")
        if self.type in (int, float):
            try:
                value = int(text) if self.type is int else float(text)
            except ValueError:
                raise ValueError(f"not {_TYPE_WORDS[self.type]}") from None
            if self.type is float and (value != value or value in (float("inf"), float("-inf"))):
                raise ValueError("not a finite number")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValueError("out of range")
            return value
        if self.type is list:
            value = [p for p in text.replace(",", " ").split() if p]
            if not value and not self.empty:
                raise ValueError("empty")
            if self.check:
                for item in value:
                    self.check(item)
            return value
        if not text and not self.empty:
            raise ValueError("empty")
        if self.choices:
            for choice in self.choices:
                if choice.lower() == text.lower():
                    return choice
            raise ValueError("not a known value")
        if text and self.check:
            self.check(text)
        return text or None


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _database_url(text):
    if not (text.startswith("sqlite:///") or text.startswith("postgresql://") or text.startswith("postgres://")):
        raise ValueError("an unsupported database URL")


def _http_url(text):
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", text):
        raise ValueError("not an http(s) URL")


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.I)


def domain_name(text):
    """A DNS domain name (letters, digits, hyphens; dot-separated labels)."""
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a domain name")


def local_part(text):
    """The part of an address before the @ (no @, no spaces)."""
    if "@" in text or " " in text or len(text) > 64:
        raise ValueError(f"{text!r} is not a local part (the part before @)")


CORE_KEYS = (
    Key("database", str, "sqlite:///postroom.db", empty=False, check=_database_url, secret=True,
        what="sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST/DB",
        help="sqlite:///FILE or postgresql://USER@HOST/DB (a password in it is masked)"),
    Key("log_dir", str, "./logs", empty=False, help="where postroom.log lives (rotated daily at 05:00 UTC)"),
    Key("data_dir", str, "./data", empty=False, help="the attachment file store lives in data_dir/filestore"),
    Key("log_level", str, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Key("domains", list, ["localhost"], empty=False, check=domain_name, what="one or more domain names",
        help="the deployment's mail domains, comma separated; the first is the primary one"),
    Key("catchall", str, "catchall", empty=False, check=local_part, what="a local part (no @)",
        help="local part replies go to"),
    Key("bounce", str, "bounce", empty=False, check=local_part, what="a local part (no @)",
        help="local part bounces go to"),
    Key("cron_time_budget", float, 300.0, min=0, max=86400, help="seconds a scheduled-action run may take"),
    Key("serve_poll_seconds", float, 5.0, min=0.01, max=3600,
        help="seconds `postroom serve` sleeps between looks for due actions"),
    Key("notification_retention_days", int, 180, min=1, max=36500,
        help="sent and canceled notifications older than this are vacuumed"),
    Key("trigger_retention_hours", int, 24, min=1, max=87600, help="spent scheduler triggers are vacuumed after this"),
    Key("doctor_bounce_warn_percent", float, 2.0, min=0, max=100, help="bounce rate over 7 days that warns"),
    Key("doctor_bounce_fail_percent", float, 5.0, min=0, max=100, help="bounce rate over 7 days that fails"),
    Key("dns_resolver", list, [], what="host[:port] words", help="host[:port] resolvers doctor asks instead of the system's"),
    Key("dns_timeout", float, 3.0, min=0.05, max=60, help="seconds; no answer means could not check"),
    Key("http_host", str, "127.0.0.1", empty=False, help="where `postroom serve` runs the HTTP service"),
    Key("http_port", int, 8025, min=0, max=65535, help="its port (0: any free port)"),
    Key("http_max_body", int, 65536, min=1024, max=2**31, help="bytes of a request body; more get 413"),
    Key("http_workers", int, 8, min=1, max=256, help="threads doing the HTTP service's database work"),
    Key("public_url", str, None, check=_http_url, what="an http(s) URL",
        help="what the world sees of the HTTP service (behind a TLS proxy); links in mail start here"),
    Key("attachment_max_size", int, 25 * 1024 * 1024, min=1, max=2**31, help="bytes of one attachment"),
    Key("console_session_hours", int, 8, min=1, max=24 * 30, help="an operator console session's lifetime"),
    Key("console_login_max_failures", int, 5, min=1, max=1000,
        help="failed console logins for one account (four times that for one client) before logins wait"),
    Key("console_login_window_minutes", int, 15, min=1, max=24 * 60, help="the window those failures are counted over"),
    Key("template_max_output", int, 1_000_000, min=1000, max=100_000_000,
        help="characters one template render may produce; more is refused"),
    Key("template_render_seconds", float, 2.0, min=0.05, max=60, help="seconds one template render may take"),
)


def mask_url(url: str) -> str:
    """A URL with its password (if any) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1]))


class Config:
    """Read-only view of the settings. `value(key)` gives a declared key's typed value;
    `get`/`getint`/... read raw strings (kept for code that predates the schema)."""

    def __init__(self, values: dict | None = None, base_dir: str | None = None, path: str | None = None,
                 from_file: bool = False):
        self.path = path
        self.base_dir = base_dir or os.getcwd()
        self._raw = {k: str(v) for k, v in (values or {}).items()}
        self._source = {k: (path if from_file and path else "given") for k in self._raw}
        self.keys: dict[str, Key] = {}
        self.owner: dict[str, str] = {}
        self._typed: dict = {}
        self.declare(CORE_KEYS, "core")

    @classmethod
    def load(cls, path: str | None = None, overrides: dict | None = None) -> "Config":
        path = path or os.environ.get("POSTROOM_CONFIG") or None
        if path is None and os.path.exists("postroom.cfg"):
            path = "postroom.cfg"
        values = {}
        base_dir = None
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"config file not found: {path}")
            # As in most INI files, `;` or `#` after whitespace starts a comment, also at
            # the end of a line (`smtp_port = 25   ; the relay`); inside a value
            # (`pa;ss`, `#anchor`) they stay part of it.
            parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
            try:
                with open(path, encoding="utf-8") as fh:
                    parser.read_file(fh)
            except (configparser.Error, UnicodeDecodeError) as exc:
                first = first_line(exc)
                raise ConfigError(f"malformed config file {path}: {first}") from None
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
            if not parser.has_section(SECTION):
                raise ConfigError(f"malformed config file {path}: no [{SECTION}] section")
            values = dict(parser.items(SECTION))
            base_dir = os.path.dirname(os.path.abspath(path))
        config = cls(values, base_dir=base_dir, path=path, from_file=True)
        for key, value in (overrides or {}).items():
            config._raw[key] = str(value)
            config._source[key] = "given"
        config._revalidate()
        return config

    # --- the schema ----------------------------------------------------------------

    def declare(self, keys, owner: str) -> list[str]:
        """Add `owner`'s keys and check their values now (ConfigError on a bad one).
        Returns problems (a key declared twice: the first declaration wins)."""
        problems = []
        for key in keys:
            if key.name in self.keys:
                if self.owner[key.name] != owner:
                    problems.append(f"config key {key.name!r} of {owner} is already declared by "
                                    f"{self.owner[key.name]}; ignored")
                continue
            self.keys[key.name] = key
            self.owner[key.name] = owner
            self._typed[key.name] = self._check(key)
        return problems

    def _revalidate(self):
        for key in self.keys.values():
            self._typed[key.name] = self._check(key)

    def _check(self, key: Key):
        if key.name not in self._raw:
            return list(key.default) if isinstance(key.default, list) else key.default
        raw = self._raw[key.name]
        try:
            return key.parse(raw)
        except ValueError as exc:
            where = f" in {self.path}" if self.path and self._source.get(key.name) != "given" else ""
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            if key.secret:
                shown = mask_url(shown)
            raise ConfigError(f"config key {key.name}{where}: {shown!r} is {exc}; allowed: "
                              f"{key.allowed()}") from None

    def unknown(self) -> list[tuple[str, str | None]]:
        """(key, closest known key or None) for every key set but not declared."""
        found = []
        for name in sorted(self._raw):
            if name not in self.keys:
                close = difflib.get_close_matches(name, list(self.keys), n=1, cutoff=0.6)
                found.append((name, close[0] if close else None))
        return found

    def unknown_warnings(self) -> list[str]:
        where = f" in {self.path}" if self.path else ""
        return [f"unknown config key {name!r}{where}" + (f" (did you mean {close!r}?)" if close else "; ignored")
                for name, close in self.unknown()]

    def effective(self) -> list[dict]:
        """Every declared key: its value as text (secrets masked), its source, its owner."""
        rows = []
        for name, key in self.keys.items():
            value = self._typed.get(name)
            text = "-" if value is None or value == [] else format_value(value)
            if key.secret and value is not None:
                text = mask_url(text) if name == "database" else "***"
            rows.append({"key": name, "value": text, "source": self.source(name),
                         "plugin": self.owner[name], "allowed": key.allowed(), "help": key.help})
        return rows

    def source(self, key: str) -> str:
        """"file", "given" (passed in by code) or "default"."""
        src = self._source.get(key, "default")
        return "file" if src == self.path and src not in ("given", "default") else src

    # --- reading -------------------------------------------------------------------

    def value(self, key: str):
        """The typed, validated value of a declared key (its default when not set)."""
        if key not in self.keys:
            raise KeyError(f"config key {key!r} is not declared (see core/config.py: How to add a key)")
        value = self._typed[key]
        return list(value) if isinstance(value, list) else value

    def is_set(self, key: str) -> bool:
        return key in self._raw

    def get(self, key: str, default=None) -> str | None:
        if key in self._raw:
            return self._raw[key]
        if key in self.keys and self.keys[key].default is not None:
            return format_value(self.keys[key].default)
        return default

    def getint(self, key: str, default: int | None = None) -> int | None:
        raw = self._raw.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be a whole number, not {raw!r}") from None

    def getfloat(self, key: str, default: float | None = None) -> float | None:
        raw = self._raw.get(key)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be a number, not {raw!r}") from None

    def getbool(self, key: str, default: bool = False) -> bool:
        raw = (self._raw.get(key) or "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config key {key!r} must be true or false, not {raw!r}")

    def getlist(self, key: str) -> list[str]:
        return [p.strip() for p in (self.get(key) or "").replace(",", " ").split() if p.strip()]

    def path_of(self, key: str) -> str:
        """A filesystem path setting, made absolute against the config file's folder."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(self.get(key))))

    @property
    def database_url(self) -> str:
        url = self.value("database")
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
            url = "sqlite:///" + os.path.join(self.base_dir, url[len("sqlite:///"):])
        return url

    @property
    def domains(self) -> list[str]:
        return [d.lower() for d in self.value("domains")]

    @property
    def primary_domain(self) -> str:
        return (self.domains or ["localhost"])[0]
