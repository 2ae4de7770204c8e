"""`postroom doctor`: the troubleshooting steps an operator would take by hand, as checks.

Every plugin contributes checks through `postroom_doctor_checks`; each returns `Check`s.
`run_checks` calls every implementation on its own, so a check that raises (or returns
something that is not a list of `Check`) becomes one `fail` naming its plugin instead of
taking the whole report down. Order: the core's checks first, then the enabled plugins'
in the order they were enabled, then any other registered object's; each contributor's
own order is kept, so the report reads like the troubleshooting page it replaces.

The last run's results are kept (`save_run`, one `Parameter` row): the console's doctor
page shows them with their age and runs the checks again on request, since the DNS probes
wait on the network and a page must not.
"""
import contextvars
import dataclasses
import datetime as dt
import json

from .errors import first_line

STATUSES = ("ok", "warn", "fail")
LAST_RUN_KEY = "doctor.last_run"
# (host, {key: value}) while run_checks runs: what its checks share (see per_run)
_RUN = contextvars.ContextVar("postroom_doctor_run", default=None)


@dataclasses.dataclass
class Check:
    """One finding: `status` is ok | warn | fail; `finding` and `remedy` are one line each."""
    name: str
    status: str
    finding: str
    remedy: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {self.status!r}")

    def as_dict(self, source: str | None = None) -> dict:
        data = dataclasses.asdict(self)
        if source is not None:
            data["source"] = source
        return data


def ordered_impls(host, hook_name: str) -> list:
    """The hook's implementations, core first, then enabled plugins in enabled order, then
    the rest (objects registered for every deployment) in registration order."""
    impls = getattr(host.hook, hook_name).get_hookimpls()
    rank = {"core": 0}
    rank.update({name: i + 1 for i, name in enumerate(host.enabled)})
    position = {id(impl): i for i, impl in enumerate(impls)}
    return sorted(impls, key=lambda impl: (rank.get(impl.plugin_name, len(rank) + 1), position[id(impl)]))


def call_impl(impl, **kwargs):
    """Call one hook implementation with the keyword arguments it accepts."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames if name in kwargs})


def per_run(host, key: str, make):
    """A value every check of the current `run_checks` shares, made by `make()` on first
    use (the DNS resolver: each name asked once, one timeout when DNS does not answer);
    outside a run, a fresh one on every call."""
    run = _RUN.get()
    if run is None or run[0] is not host:
        return make()
    if key not in run[1]:
        run[1][key] = make()
    return run[1][key]


def run_checks(host) -> list[tuple[str, Check]]:
    """Every contributed check as (source plugin, Check), in report order."""
    token = _RUN.set((host, {}))
    try:
        return _run_checks(host)
    finally:
        _RUN.reset(token)


def _run_checks(host) -> list[tuple[str, Check]]:
    results = []
    for impl in ordered_impls(host, "postroom_doctor_checks"):
        source = impl.plugin_name
        try:
            checks = call_impl(impl, host=host)
            checks = list(checks or [])
            bad = [c for c in checks if not isinstance(c, Check)]
            if bad:
                raise TypeError(f"returned {type(bad[0]).__name__} instead of core.doctor.Check")
        except Exception as exc:  # noqa: BLE001 - a broken check is a finding, not a crash
            host.log.exception("doctor checks of %s raised", source)
            checks = [Check(f"{source}.checks", "fail",
                            f"the checks of {source} raised {type(exc).__name__}: {first_line(exc)}",
                            f"details in postroom.log; report it to the maintainer of {source}")]
        for check in checks:
            check.finding, check.remedy = first_line(check.finding), first_line(check.remedy)
            results.append((source, check))
    return results


def summary(results) -> dict:
    counts = {status: 0 for status in STATUSES}
    for _, check in results:
        counts[check.status] += 1
    return counts


def report_lines(results) -> list[str]:
    """The human report: per check a status line, its finding, its remedy; then totals."""
    lines = []
    for source, check in results:
        by = "" if source == "core" else f"  ({source})"
        lines.append(f"[{check.status.upper():4}] {check.name}{by}")
        lines.append(f"       {check.finding}")
        if check.remedy:
            lines.append(f"       -> {check.remedy}")
    counts = summary(results)
    lines.append(f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok")
    return lines


@dataclasses.dataclass
class Run:
    """A stored doctor run: when, run by whom (`postroom doctor`, the console's operator),
    and its results as `run_checks` returned them."""
    taken_at: dt.datetime
    by: str
    results: list


def save_run(host, results, by: str) -> None:
    """Keep `results` as the last run (replacing the previous one), in its own short
    transaction: call it after the checks, never around them (they talk to DNS)."""
    from .models import Parameter
    value = json.dumps({"taken_at": host.clock.now().isoformat(), "by": by,
                        "checks": [c.as_dict(source) for source, c in results]})
    with host.transaction():
        (Parameter.insert(key=LAST_RUN_KEY, value=value)
         .on_conflict(conflict_target=[Parameter.key], update={Parameter.value: value}).execute())


def last_run(host) -> Run | None:
    """The last stored run, or None when the checks never ran (or what is stored cannot be
    read: then the checks simply have to run again)."""
    from .models import Parameter
    row = Parameter.get_or_none(Parameter.key == LAST_RUN_KEY)
    if row is None:
        return None
    try:
        data = json.loads(row.value)
        results = [(c.pop("source"), Check(**c)) for c in data["checks"]]
        return Run(dt.datetime.fromisoformat(data["taken_at"]), data["by"], results)
    except (ValueError, KeyError, TypeError):
        host.log.warning("doctor: the stored last run cannot be read; it is ignored")
        return None
