"""Running every plugin's vacuum: one chunk per transaction, one plugin's failure isolated.

Each `postroom_vacuum` implementation is called on its own (not through the hook's
fan-out) so that a plugin that raises is rolled back, logged and skipped while the others
still run. A plugin is called chunk after chunk while it reports work remaining and the
run has time left; every plugin gets at least one chunk per run, so a huge backlog in one
plugin never starves the others. The scheduled run reports `progress(done, remaining)`,
and the core continues it soon while work remains.
"""
import datetime as dt
import json
import time

from postroom.core.doctor import Check, call_impl, ordered_impls
from postroom.core.errors import ConfigError, first_line
from postroom.core.models import Parameter

DEFAULT_BATCH_SIZE = 1000
LAST_RUN_PARAM = "auto_vacuum.last_run"
FAILING_TOO_LONG = dt.timedelta(days=7)


class _DryRun(Exception):
    """Raised to roll a dry run's transaction back, whatever a plugin did in it."""


def batch_size(host) -> int:
    size = host.config.getint("vacuum_batch_size", DEFAULT_BATCH_SIZE)
    if size < 1:
        raise ConfigError(f"config key 'vacuum_batch_size' must be at least 1, not {size}")
    return size


def _impls(host):
    """Plugins first, the core last: plugin rows may point at core rows."""
    impls = ordered_impls(host, "postroom_vacuum")
    return [i for i in impls if i.plugin_name != "core"] + [i for i in impls if i.plugin_name == "core"]


def _parse(result) -> tuple[dict, int]:
    if result is None:
        return {}, 0
    if not isinstance(result, dict) or not isinstance(result.get("removed", {}), dict):
        raise TypeError(f"postroom_vacuum must return {{'removed': {{kind: count}}, 'remaining': n}}, "
                        f"not {result!r:.80}")
    removed = {str(k): int(v) for k, v in (result.get("removed") or {}).items()}
    return removed, max(0, int(result.get("remaining") or 0))


def vacuum_all(host, dry_run: bool = False, should_stop=None, size: int | None = None,
               on_chunk=None) -> dict:
    """Vacuum every registered implementation; returns the per-plugin report.

    `on_chunk(entry)` (optional) is called after each chunk with the plugin's running
    entry, e.g. to show progress on a terminal."""
    size = size or batch_size(host)
    started = time.monotonic()
    longest = 0.0
    entries = []
    for impl in _impls(host):
        entry = {"plugin": impl.plugin_name, "removed": {}, "remaining": 0, "chunks": 0, "error": None,
                 "seconds": 0.0, "longest_transaction": 0.0}
        entries.append(entry)
        plugin_started = time.monotonic()
        while True:
            t0 = time.monotonic()
            try:
                with host.transaction():
                    removed, remaining = _parse(call_impl(impl, host=host, batch_size=size, dry_run=dry_run))
                    if dry_run:
                        raise _DryRun()
            except _DryRun:
                pass
            except Exception as exc:  # noqa: BLE001 - one plugin's failure must not stop the others
                entry["error"] = f"{type(exc).__name__}: {first_line(exc)}"
                entry["remaining"] = 0  # do not re-run at once for a plugin that is broken
                host.log.exception("vacuum of %s failed (rolled back; the other plugins go on)",
                                   impl.plugin_name)
                break
            finally:
                took = time.monotonic() - t0
                longest = max(longest, took)
                entry["longest_transaction"] = round(max(entry["longest_transaction"], took), 4)
                entry["seconds"] = round(time.monotonic() - plugin_started, 3)
            entry["chunks"] += 1
            for kind, n in removed.items():
                entry["removed"][kind] = entry["removed"].get(kind, 0) + n
            entry["remaining"] = remaining
            if on_chunk is not None:
                on_chunk(entry)
            if dry_run or not remaining:
                break
            if not sum(removed.values()):
                host.log.warning("vacuum of %s reports %s remaining but removed nothing; "
                                 "leaving it for the next run", impl.plugin_name, remaining)
                entry["remaining"] = 0
                break
            if should_stop is not None and should_stop():
                break
    return {"dry_run": dry_run, "batch_size": size, "plugins": entries,
            "removed": sum(sum(e["removed"].values()) for e in entries),
            "remaining": sum(e["remaining"] for e in entries),
            "errors": sum(1 for e in entries if e["error"]),
            "seconds": round(time.monotonic() - started, 3),
            "longest_transaction": round(longest, 4)}


def run_vacuum(host, dry_run: bool = False, should_stop=None, size: int | None = None,
               on_chunk=None) -> dict:
    """`vacuum_all`, logged, and (unless a dry run) remembered for `postroom doctor`."""
    result = vacuum_all(host, dry_run=dry_run, should_stop=should_stop, size=size, on_chunk=on_chunk)
    for e in result["plugins"]:
        if e["error"] is None:
            host.log.info("vacuum of %s: %s %s, remaining %s", e["plugin"],
                          "would remove" if dry_run else "removed",
                          ", ".join(f"{k} {n}" for k, n in e["removed"].items()) or "nothing", e["remaining"])
    if not dry_run:
        _remember(host, result)
    return result


def run_action(host, run) -> None:
    """Handler of `Base: Auto-vacuum internal data`."""
    result = run_vacuum(host, should_stop=run.should_stop)
    run.progress(result["removed"], result["remaining"])


def _remember(host, result) -> None:
    now = host.clock.now()
    previous = last_run(host) or {}
    failing = {}
    for e in result["plugins"]:
        if e["error"]:
            since = (previous.get("failing") or {}).get(e["plugin"], {}).get("since") or now.isoformat()
            failing[e["plugin"]] = {"since": since, "error": e["error"]}
    value = json.dumps({"at": now.isoformat(), "removed": result["removed"], "failing": failing,
                        "by_plugin": {e["plugin"]: sum(e["removed"].values()) for e in result["plugins"]}})
    with host.transaction():
        (Parameter.insert(key=LAST_RUN_PARAM, value=value)
         .on_conflict(conflict_target=[Parameter.key], update={Parameter.value: value}).execute())


def last_run(host) -> dict | None:
    row = Parameter.get_or_none(Parameter.key == LAST_RUN_PARAM)
    return json.loads(row.value) if row else None


def last_run_check(host) -> Check:
    """How the last vacuum went: ok, a plugin failing (warn), or failing for a week (fail)."""
    last = last_run(host)
    if last is None:
        return Check("vacuum.last_run", "ok", "the auto-vacuum has not run yet (it runs daily)",
                     "postroom vacuum --dry-run shows what it would remove")
    at = dt.datetime.fromisoformat(last["at"])
    failing = last.get("failing") or {}
    if failing:
        since = min(dt.datetime.fromisoformat(f["since"]) for f in failing.values())
        what = "; ".join(f"{p}: {f['error']}" for p, f in failing.items())
        status = "fail" if host.clock.now() - since > FAILING_TOO_LONG else "warn"
        return Check("vacuum.last_run", status,
                     f"the vacuum of {', '.join(failing)} has failed since {since:%Y-%m-%d %H:%M} UTC "
                     f"(last run {at:%Y-%m-%d %H:%M}): {what}",
                     "grep \"vacuum of\" postroom.log for the traceback; the database keeps growing "
                     "until it is fixed")
    parts = ", ".join(f"{p} {n}" for p, n in (last.get("by_plugin") or {}).items() if n)
    return Check("vacuum.last_run", "ok", f"last auto-vacuum {at:%Y-%m-%d %H:%M} UTC removed "
                                          f"{last['removed']} row(s)" + (f" ({parts})" if parts else ""))
