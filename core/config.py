"""The INI configuration (`postroom.cfg`, like odoo.conf), section `[postroom]`.

Found from `--config PATH`, else `$POSTROOM_CONFIG`, else `./postroom.cfg` if present, else
defaults. Relative paths in a file are taken relative to that file's folder.
"""
import configparser
import os

from .errors import ConfigError, first_line

SECTION = "postroom"
DEFAULTS = {
    "database": "sqlite:///postroom.db",
    "log_dir": "./logs",
    "data_dir": "./data",  # the attachment file store lives in data_dir/filestore
    "log_level": "INFO",
    "domains": "localhost",
    "catchall": "catchall",
    "bounce": "bounce",
    "cron_time_budget": "300",
    "serve_poll_seconds": "5",
    "http_host": "127.0.0.1",
    "http_port": "8025",
}


class Config:
    """Read-only view of the settings, with typed getters. Plugins read their own keys."""

    def __init__(self, values: dict | None = None, base_dir: str | None = None, path: str | None = None):
        self.path = path
        self.base_dir = base_dir or os.getcwd()
        self._values = dict(DEFAULTS)
        self._values.update({k: str(v) for k, v in (values or {}).items()})

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
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
            except (configparser.Error, UnicodeDecodeError) as exc:
                first = first_line(exc)
                raise ConfigError(f"malformed config file {path}: {first}") from None
            if not parser.has_section(SECTION):
                raise ConfigError(f"malformed config file {path}: no [{SECTION}] section")
            values = dict(parser.items(SECTION))
            base_dir = os.path.dirname(os.path.abspath(path))
        values.update(overrides or {})
        return cls(values, base_dir=base_dir, path=path)

    def get(self, key: str, default=None) -> str | None:
        return self._values.get(key, default)

    def getint(self, key: str, default: int | None = None) -> int | None:
        raw = self._values.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be a whole number, not {raw!r}") from None

    def getfloat(self, key: str, default: float | None = None) -> float | None:
        raw = self._values.get(key)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be a number, not {raw!r}") from None

    def getbool(self, key: str, default: bool = False) -> bool:
        raw = (self._values.get(key) or "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config key {key!r} must be true or false, not {raw!r}")

    def getlist(self, key: str) -> list[str]:
        return [p.strip() for p in (self._values.get(key) or "").replace(",", " ").split() if p.strip()]

    def path_of(self, key: str) -> str:
        """A filesystem path setting, made absolute against the config file's folder."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(self._values[key])))

    @property
    def database_url(self) -> str:
        url = self._values["database"]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
            url = "sqlite:///" + os.path.join(self.base_dir, url[len("sqlite:///"):])
        return url

    @property
    def domains(self) -> list[str]:
        return [d.lower() for d in self.getlist("domains")]

    @property
    def primary_domain(self) -> str:
        return (self.domains or ["localhost"])[0]
