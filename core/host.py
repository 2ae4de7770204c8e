"""The Host: one deployment's config, database, plugin manager, clock and logger.

Nothing here is global: build as many hosts as you like (tests do). A host binds the
models of its enabled plugins to its own database when it opens; one process works with
one open host at a time.
"""
import contextlib
import fcntl
import logging
import os
import threading

import peewee as pw
from playhouse.migrations import Runner

from . import logs, plugins as plugin_loader
from .checkpoints import BackgroundCheckpoints
from .clock import SystemClock
from .config import Config
from .db import Savepoint, is_postgres, open_database, sqlite_file, translate_errors
from .errors import ConfigError, Conflict, InvalidInput, NotFound
from .console.models import CONSOLE_MODELS
from .models import CORE_MODELS, PluginState
from .records import RecordType

CORE_MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
# The console's tables keep a migration history of their own (component "console").
CONSOLE_MIGRATIONS = os.path.join(os.path.dirname(__file__), "console", "migrations")


class _CoreHooks:
    """The host's own hook implementations: the generic record type, the vacuum of core
    tables, the core's console screens and the core's doctor checks."""

    @plugin_loader.hookimpl
    def postroom_record_types(self, register):
        register(RecordType("generic", "Generic record"))

    @plugin_loader.hookimpl
    def postroom_message_subtypes(self, register):
        from . import subtypes
        for subtype in subtypes.CORE:
            register(subtype)

    @plugin_loader.hookimpl
    def postroom_vacuum(self, host, batch_size, dry_run):
        from . import vacuum
        return vacuum.vacuum(host, batch_size, dry_run)

    @plugin_loader.hookimpl
    def postroom_http_routes(self, host, register):
        from .console import core_screens
        core_screens.register_all(register)

    @plugin_loader.hookimpl
    def postroom_doctor_checks(self, host):
        from . import doctor_checks
        return doctor_checks.core_checks(host)


def declare_plugin_keys(config: Config, available: dict) -> list[str]:
    """Check the config keys every available plugin declares; returns the warnings (a key
    declared twice, unknown keys with the closest known one)."""
    warnings = []
    for name in sorted(available):
        info = plugin_loader.info_of(available[name])
        warnings += config.declare(getattr(info, "config", ()) or (), name)
    return warnings + config.unknown_warnings()


def _masked_by_rollback(exc: BaseException) -> BaseException | None:
    """The real error behind SQLite's "cannot rollback - no transaction is active": a
    failed write (disk full, I/O error) already ended the transaction, so the rollback
    that follows fails too and would hide why."""
    if not (isinstance(exc, pw.OperationalError) and "no transaction is active" in str(exc)):
        return None
    cause = exc.__context__  # (the driver's rollback error first, then what failed before it)
    while cause is not None and "no transaction is active" in str(cause):
        cause = cause.__context__
    return cause


class Host:
    """A deployment, opened: `config`, `clock` (`clock.now()`, aware UTC), `log`, the
    enabled plugins' `hook`s and `service(name)`s. `postroom.open_host(config)` (or
    `Host.from_config(path)`) is the way in; `close()` (or `with`) the way out.

    `transaction()` groups writes (nested blocks are savepoints), `after_commit(fn)` runs
    work once they are committed, and `offloading()` moves that work to background
    threads. One open host per process (it binds the models to its database)."""

    def __init__(self, config: Config, clock=None, available=None, extra=(), log_to_file=True):
        self.config = config
        self.clock = clock or SystemClock()
        self.db = open_database(config.database_url)
        # The log file comes first, so that a broken third-party plugin is reported in it.
        self.log = logging.getLogger("postroom")
        self._log_handler = logs.install(self, config) if log_to_file else None
        self.plugin_problems: list[str] = []
        self.available = dict(plugin_loader.discover(self.plugin_problems) if available is None else available)
        for plugin in extra:
            info = plugin_loader.info_of(plugin)
            if info is not None:
                self.available[info.name] = plugin
        self._always = [p for p in extra if plugin_loader.info_of(p) is None]
        self.pm = plugin_loader.make_plugin_manager()
        self._tx = threading.local()
        # Per scheduled action, the error last logged with its traceback: a run failing
        # the same way again (an outage) logs one line (core.scheduler).
        self.cron_errors_logged: dict[str, str] = {}
        self.enabled: list[str] = []
        self.record_types: dict[str, RecordType] = {}
        self.subtypes: dict = {}
        self.action_specs: dict = {}
        self.services: dict = {}
        self._background = None
        self._background_lock = threading.Lock()
        # On a SQLite file: the thread that copies the write-ahead log back (core.checkpoints).
        self.checkpoints = None
        self._opened = False
        try:
            self.config_warnings = declare_plugin_keys(config, self.available)
        except Exception:
            self.close()
            raise
        for warning in self.config_warnings:
            self.log.warning("%s", warning)

    @classmethod
    def from_config(cls, path=None, **kwargs) -> "Host":
        return cls(Config.load(path), **kwargs).open()

    # --- opening -------------------------------------------------------------------

    def open(self, create: bool = True) -> "Host":
        """Connect, migrate and load the enabled plugins. With `create=False` (every command
        but `postroom init`) a SQLite file that does not exist is an error instead of a new,
        empty database next to a mistyped path."""
        self._ensure_database_file(create)
        with translate_errors(self.config.database_url):
            self.db.connect(reuse_if_open=True)
            self.db.bind(CORE_MODELS + CONSOLE_MODELS)
            self._migrate([("core", CORE_MIGRATIONS), ("console", CONSOLE_MIGRATIONS)])
            self.enabled = [s.name for s in PluginState.select().where(PluginState.enabled)
                            .order_by(PluginState.changed_at, PluginState.name)
                            if s.name in self.available]
            self.pm.register(_CoreHooks(), name="core")
            for plugin in self._always:
                self.pm.register(plugin)
            for name in plugin_loader.with_requirements(self.available, self.enabled):
                self._register(name)
            self.pm.check_pending()
            self._migrate(self._plugin_migrations())
            self._collect_registries()
        self._opened = True
        path = sqlite_file(self.db)
        if path and self.checkpoints is None:
            self.checkpoints = BackgroundCheckpoints(path).start()
        self.pm.hook.postroom_configure(host=self)
        return self

    def _ensure_database_file(self, create: bool) -> None:
        path = sqlite_file(self.db)
        if path is None:
            return
        if os.path.exists(path):
            return
        if not create:
            where = f" in {self.config.path}" if self.config.path else ""
            raise ConfigError(f"no database at {path}: run postroom init (or fix `database`{where})")
        folder = os.path.dirname(path)
        if folder:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the database folder {folder}: {exc.strerror or exc}") from None

    def _register(self, name):
        plugin_loader.register(self.pm, self.available[name], name)
        if name not in self.enabled:
            self.enabled.append(name)
        plugin = self.available[name]
        models_fn = getattr(plugin, "postroom_models", None)
        if models_fn is not None:
            self.db.bind(models_fn())

    def _plugin_migrations(self):
        return [m for m in self.pm.hook.postroom_migrations() if m]

    def _migrate(self, components):
        """Apply pending migrations; on PostgreSQL under an advisory lock so that workers
        starting together do not race each other's DDL."""
        for component, directory in components:
            runner = Runner(self.db, directory, table_name=f"migrations_{component}")
            if all(m.applied for m in runner.status() if m.path):
                continue
            with self._migration_lock():
                pending = [m for m in runner.status() if m.path and not m.applied]
                if pending:
                    runner.up()
                    self.log.info("migrations applied for %s: %s", component,
                                  ", ".join(m.name for m in pending))

    @contextlib.contextmanager
    def _migration_lock(self):
        """One migrating process at a time, on both engines: a PostgreSQL advisory lock, or
        an exclusive flock on a file beside the SQLite database (its folder is writable
        anyway: SQLite keeps its journal there). Whoever waited re-reads what is pending."""
        if is_postgres(self.db):
            self.db.execute_sql("SELECT pg_advisory_lock(7319001)")
            try:
                yield
            finally:
                self.db.execute_sql("SELECT pg_advisory_unlock(7319001)")
            return
        path = sqlite_file(self.db)
        if path is None:
            yield
            return
        with open(f"{path}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _collect_registries(self):
        types = {}

        def register(rtype):
            if rtype.name in types:
                raise Conflict(f"record type {rtype.name!r} is registered twice")
            types[rtype.name] = rtype
        self.pm.hook.postroom_record_types(register=register)
        self.record_types = types
        from . import subtypes
        found = {}

        def register_subtype(subtype):
            subtypes.check_name(subtype.name)
            if subtype.name in found:
                raise Conflict(f"message subtype {subtype.name!r} is registered twice")
            found[subtype.name] = subtype
        self.pm.hook.postroom_message_subtypes(register=register_subtype)
        self.subtypes = found
        specs = {}
        for plugin_name in ["core"] + list(self.enabled):
            plugin = self.pm.get_plugin(plugin_name)
            fn = getattr(plugin, "postroom_scheduled_actions", None)
            for spec in (fn() if fn else []) or []:
                specs[spec.code] = spec.for_plugin(plugin_name)
        self.action_specs = specs

    def close(self):
        if self._background is not None:
            self._background.shutdown(wait=True)  # offloaded sends finish before we go
            self._background = None
        if self.checkpoints is not None:
            self.checkpoints.stop()
            self.checkpoints = None
        if self._log_handler is not None:
            logs.uninstall(self, self._log_handler)
            self._log_handler = None
        if not self.db.is_closed():
            self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- plugins -------------------------------------------------------------------

    def plugin_rows(self):
        """(name, enabled, requires, description) for every available plugin."""
        rows = []
        for name in sorted(self.available):
            info = plugin_loader.info_of(self.available[name])
            rows.append({"name": name, "enabled": name in self.enabled,
                         "requires": list(info.requires), "description": info.description})
        return rows

    def enable_plugin(self, name) -> list[str]:
        """Enable `name` and what it requires: migrations, scheduled actions, state. Returns
        the plugins that were newly enabled."""
        from . import scheduler
        order = plugin_loader.with_requirements(self.available, [name])
        new = [n for n in order if n not in self.enabled]
        for n in new:
            self._register(n)
        self.pm.check_pending()
        with translate_errors(self.config.database_url):
            self._migrate(self._plugin_migrations())
            self._collect_registries()
            with self.transaction():
                now = self.clock.now()
                for n in order:
                    (PluginState.insert(name=n, enabled=True, changed_at=now)
                     .on_conflict(conflict_target=[PluginState.name],
                                  update={PluginState.enabled: True, PluginState.changed_at: now})
                     .execute())
                scheduler.sync_actions(self, [s for s in self.action_specs.values() if s.plugin in order])
        for n in new:
            self.log.info("plugin %s enabled", n)
        self.pm.hook.postroom_configure(host=self)
        return new

    def disable_plugin(self, name):
        """Disable `name`; refused while an enabled plugin requires it. Data is kept."""
        if name not in self.available:
            plugin_loader.with_requirements(self.available, [name])  # raises NotFound
        if name not in self.enabled:
            raise InvalidInput(f"plugin {name!r} is not enabled")
        needed_by = plugin_loader.dependents(self.available, self.enabled, name)
        if needed_by:
            raise Conflict(f"cannot disable {name}: {', '.join(needed_by)} requires it; disable "
                           f"{'them' if len(needed_by) > 1 else 'it'} first")
        with self.transaction():
            (PluginState.update(enabled=False, changed_at=self.clock.now())
             .where(PluginState.name == name).execute())
        self.pm.unregister(name=name)
        self.enabled.remove(name)
        self._collect_registries()
        self.services = {}  # rebuilt by the plugins still enabled
        self.pm.hook.postroom_configure(host=self)
        self.log.info("plugin %s disabled", name)

    def is_enabled(self, name) -> bool:
        return name in self.enabled

    def provide(self, name: str, service) -> None:
        """Publish a service other plugins may use (e.g. mail_queue provides "mail").
        Plugins talk through hooks and such services, never through each other's modules."""
        self.services[name] = service

    def service(self, name: str):
        """A published service, or NotFound saying which plugin provides it."""
        if name not in self.services:
            raise NotFound(f"service {name!r} is not available: enable the plugin that provides it")
        return self.services[name]

    @property
    def hook(self):
        return self.pm.hook

    # --- transactions --------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, flat: bool = False, join: bool = False):
        """A write transaction (nested calls become savepoints). Callbacks queued with
        `after_commit` run once the outermost block has committed, never on rollback (a
        savepoint rolled back drops the callbacks queued inside it).

        A `join=True` block nested in a `flat=True` one makes no savepoint of its own: the
        flat block's caller promises not to catch a failure inside it, so any failure rolls
        back the whole flat block anyway. The inbound gateway stores each message in a flat
        block, and `create_record` and `post_message` join it (their savepoints only
        repeated its own, twice per message). Blocks that do not join keep theirs."""
        state = self._tx
        depth = getattr(state, "depth", 0)
        if depth == 0:
            state.callbacks = []
            state.flat_at = None
        flat_at = state.flat_at
        mark = len(state.callbacks)
        state.depth = depth + 1
        if depth == 0:
            block = self.db.transaction_block()
        elif join and flat_at is not None and depth > flat_at:
            block = contextlib.nullcontext()
        else:
            block = Savepoint(self.db, depth)
        if flat and flat_at is None:
            state.flat_at = depth
        try:
            with block:
                yield
        except BaseException as exc:
            state.depth, state.flat_at = depth, flat_at
            if depth == 0:
                state.callbacks = []
            else:
                del state.callbacks[mark:]
            masked = _masked_by_rollback(exc)
            if masked is not None:
                raise masked from None
            raise
        state.depth, state.flat_at = depth, flat_at
        if depth == 0:
            callbacks, state.callbacks = state.callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a callback's failure must not undo a commit
                    self.log.exception("after-commit callback %r failed", callback)

    def after_commit(self, callback, network: bool = False):
        """Run `callback()` after the current transaction commits (at once if none is open).
        Network work (an SMTP conversation) belongs here, never inside a transaction.

        `network=True` marks work that may wait on a remote peer: inside an `offloading()`
        block it runs on the host's background threads instead of the caller's, so a caller
        that answers someone (the inbound gateway answering DATA) is not held up by it."""
        if network and getattr(self._tx, "offload", False):
            callback = self._offloaded(callback)
        if getattr(self._tx, "depth", 0) == 0:
            callback()
        else:
            self._tx.callbacks.append(callback)

    @contextlib.contextmanager
    def offloading(self):
        """Within this block, `after_commit(..., network=True)` work runs in the background.
        What it sends is already committed as queued work, so a crash loses nothing: the
        queue picks it up. `close()` waits for the background work to finish."""
        previous = getattr(self._tx, "offload", False)
        self._tx.offload = True
        try:
            yield
        finally:
            self._tx.offload = previous

    def _offloaded(self, callback):
        def submit():
            with self._background_lock:
                if self._background is None:
                    from concurrent.futures import ThreadPoolExecutor
                    self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="postroom-bg")
            future = self._background.submit(callback)
            future.add_done_callback(lambda f: f.exception() and self.log.error(
                "background work %r failed: %s", callback, f.exception()))
        return submit

    @property
    def in_transaction(self) -> bool:
        return getattr(self._tx, "depth", 0) > 0

    def statements(self) -> int:
        """Statements executed so far on this host's database object (for tests/benches)."""
        return self.db.statements
