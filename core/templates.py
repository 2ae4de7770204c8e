"""Operators' templates, rendered in Jinja2's sandbox: they are written by people, not
trusted code (Odoo renders with a restricted engine for the same reason).

- `SandboxedEnvironment` with no loader (no `include`, `import` or `extends`: no file
  access) and only `range` as a global (no network, no `lipsum`, no `cycler`);
- no Python attribute access at all: `contact.name` reads the context's own mappings, while
  `''.__class__`, `contact.items` or `'x'.format` are refused as unsafe;
- only harmless filters (no `center`/`indent`/`wordwrap` that make huge strings), and `*`
  / `**` checked so `'x' * 10**9` is refused before it is built;
- output bounded (`template_max_output`, default 1 MB) while it is generated, and a time
  limit (`template_render_seconds`, default 2 s) enforced by a watchdog thread that raises
  in the rendering thread, so nested loops cannot hang a worker;
- autoescape for HTML bodies; `StrictUndefined`: a name the context lacks is an error.

`compile_template` refuses what does not compile or names an unknown variable (with the
line); `render` raises `TemplateFailure` (an `InvalidInput`) with the line and the reason.
A `Renderer` renders many times with the same limits (a campaign batch: three parts per
recipient), each recipient's values one mapping that every part reads. A template that is
only text and `{{ name }}` / `{{ name.key }}` outputs (a mail merge: most campaigns) is
rendered by joining its pieces (`_plan`), with what Jinja2 would output for them; any other
value, or a name missing, goes through Jinja2 (which then gives the answer or the error).
"""
import ctypes
import functools
import re
import threading
import time

import jinja2
import jinja2.meta
import jinja2.nodes
import markupsafe
from jinja2.sandbox import SandboxedEnvironment, SecurityError, safe_range

from .errors import InvalidInput

DEFAULT_MAX_OUTPUT = 1_000_000
DEFAULT_SECONDS = 2.0
SAFE_FILTERS = {"abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float",
                "format", "int", "join", "last", "length", "list", "lower", "replace", "round",
                "safe", "string", "striptags", "sum", "title", "trim", "truncate", "upper",
                "urlencode", "wordcount", "min", "max", "sort", "unique", "reverse", "batch"}
MAX_TEMPLATE_SIZE = 200_000


class TemplateFailure(InvalidInput):
    """A template that does not compile, names an unknown variable, or fails to render."""


class _Timeout(BaseException):
    """Raised inside a render by the watchdog (BaseException: template code cannot catch it)."""


class _Env(SandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def __init__(self, html: bool, max_output: int):
        super().__init__(autoescape=html, undefined=jinja2.StrictUndefined, loader=None,
                         keep_trailing_newline=True)
        self.max_output = max_output
        self.filters = {k: v for k, v in self.filters.items() if k in SAFE_FILTERS}
        self.tests = dict(self.tests)
        self.globals = {"range": self.globals["range"]}

    def is_safe_attribute(self, obj, attr, value):
        return False  # names resolve through the context's mappings (getitem) only

    def getattr(self, obj, attribute):
        # `contact.name` on a context mapping: the key first, since no attribute is ever
        # allowed; jinja's order (attribute, then key) raised an AttributeError per use.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value):
        return None  # no str.format / format_map either: they are attribute access too

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > self.max_output:
                    raise SecurityError(f"the result would exceed {self.max_output} characters")
        return super().call_binop(context, operator, left, right)


def limits(host) -> tuple[int, float]:
    return (host.config.getint("template_max_output", DEFAULT_MAX_OUTPUT),
            host.config.getfloat("template_render_seconds", DEFAULT_SECONDS))


def _line_of(exc: BaseException, name: str) -> int | None:
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:  # jinja rewrites tracebacks so template frames carry its lines
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _failure(label: str, exc: BaseException, name: str) -> TemplateFailure:
    line = _line_of(exc, name)
    where = f"{label}, line {line}" if line else label
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TemplateFailure(f"template {where}: {message}")


def compile_template(host, source: str, label: str, known=None, html: bool = True) -> jinja2.Template:
    """The compiled template, or TemplateFailure: a syntax error (with its line) or a name
    outside `known` (when given). Compiled once per source, label, names and limit: a
    campaign compiles its templates for every batch, a notification its layout per mail."""
    if source is None:
        source = ""
    if len(source) > MAX_TEMPLATE_SIZE:
        raise TemplateFailure(f"template {label} is larger than {MAX_TEMPLATE_SIZE} characters")
    return _compiled(source, label, None if known is None else frozenset(known), html, limits(host)[0])


# A few dozen: a campaign batch needs three, a notification its layout; each entry holds a
# source of up to MAX_TEMPLATE_SIZE and its compiled code, so the bound is kept small.
@functools.lru_cache(maxsize=32)
def _compiled(source: str, label: str, known: frozenset | None, html: bool, max_output: int) -> jinja2.Template:
    # Templates are read-only once built (jinja renders one from several threads), so one
    # compiled template serves every caller; a failure is raised again each time (not kept).
    env = _Env(html, max_output)
    try:
        tree = env.parse(source, name=label)
    except jinja2.TemplateSyntaxError as exc:
        raise _failure(label, exc, label) from None
    if known is not None:
        try:
            names = jinja2.meta.find_undeclared_variables(tree)
        except jinja2.TemplateError as exc:  # e.g. a filter that is not offered
            raise _failure(label, exc, label) from None
        unknown = sorted(names - set(known) - {"range"})
        if unknown:
            line = next((n.lineno for n in tree.find_all(jinja2.nodes.Name) if n.name == unknown[0]), None)
            at = f", line {line}" if line else ""
            raise TemplateFailure(f"template {label}{at}: unknown variable {unknown[0]!r} "
                                  f"(known: {', '.join(sorted(known))})")
    try:
        code = env.compile(source, name=label, filename=label)
        # A plain dict, not jinja's ChainMap over the environment's globals (which never
        # change here): every render copies the globals, and a ChainMap copy cost half of
        # a short template's render (a campaign renders three per recipient).
        template = env.template_class.from_code(env, code, dict(env.make_globals(None)))
    except jinja2.TemplateError as exc:
        raise _failure(label, exc, label) from None
    template.postroom_plan = _plan(tree)
    return template


def _lookup(node) -> tuple | None:
    """("contact", "name") for `contact.name` (any depth of attributes on a name), else None."""
    keys = []
    while isinstance(node, jinja2.nodes.Getattr):
        keys.append(node.attr)
        node = node.node
    if not isinstance(node, jinja2.nodes.Name) or node.ctx != "load":
        return None
    return (node.name, *reversed(keys))


def _plan(tree) -> tuple | None:
    """The template as pieces when it is only text and outputs of names and their
    attributes: its text (str, as Jinja2 emits it: after whitespace control, never
    escaped) and lookups (tuples). None for anything else (filters, tags, expressions):
    those render through Jinja2."""
    pieces = []
    for node in tree.body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                pieces.append(child.data)
                continue
            lookup = _lookup(child)
            if lookup is None:
                return None
            pieces.append(lookup)
    return tuple(pieces)


_MISSING = object()
_SPECIAL = re.compile(r"[&<>'\"]")  # what markupsafe.escape replaces


def _joined(plan: tuple, namespace: dict, html: bool) -> str | None:
    """A planned template's output: each value as Jinja2 outputs it (escaped for HTML), when
    every value is found and is a string or an int read from plain dicts (what the sandbox's
    `getattr` reads first); else None, and Jinja2 renders it (a missing name is then its
    error, an object its own lookup)."""
    out = []
    for piece in plan:
        if type(piece) is str:
            out.append(piece)
            continue
        value = namespace.get(piece[0], _MISSING)
        for key in piece[1:]:
            if type(value) is not dict:
                return None
            value = value.get(key, _MISSING)
        if type(value) is str:
            # markupsafe's escape only when there is something to escape (its Markup
            # object cost more than the rest of the lookup).
            out.append(str(markupsafe.escape(value)) if html and _SPECIAL.search(value) else value)
        elif type(value) is int:
            out.append(str(value))
        else:
            return None
    return "".join(out)


@functools.lru_cache(maxsize=32)
def names_in(source: str) -> frozenset:
    """The names a template's source reads from its context (`range` among them when it
    uses it); for a source that compiled. A template that reads none of a recipient's
    values renders the same for every recipient: no random filter, clock or I/O is
    offered, so the sandbox's output depends on the values read and nothing else."""
    return frozenset(jinja2.meta.find_undeclared_variables(_Env(False, DEFAULT_MAX_OUTPUT).parse(source or "")))


# --- the render time limit -------------------------------------------------------------

class _Watchdog:
    """One daemon thread for the process: raises `_Timeout` in a thread whose render
    passed its deadline (PyThreadState_SetAsyncExc, checked between bytecodes)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.armed = {}  # thread id → (deadline, fired)
        self.thread = None

    def arm(self, seconds: float) -> int:
        tid = threading.get_ident()
        with self.lock:
            self.armed[tid] = [time.monotonic() + seconds, False]
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="postroom-template-watchdog",
                                               daemon=True)
                self.thread.start()
        return tid

    def disarm(self, tid: int) -> bool:
        with self.lock:
            _, fired = self.armed.pop(tid, (0, False))
            if fired:  # clear an exception still pending for this thread
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        return fired

    def _watch(self):
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                for tid, entry in self.armed.items():
                    if not entry[1] and now > entry[0]:
                        entry[1] = True
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid),
                                                                   ctypes.py_object(_Timeout))


_watchdog = _Watchdog()


class Renderer:
    """Renders compiled templates many times (a campaign: subject, HTML and text for each
    recipient) with the limits read once. Each recipient's values are one `namespace`:
    the globals and the values shared by every render (`shared`, referenced, never
    copied into a new mapping per template) plus that recipient's own, handed to each of
    the templates as their context as it is (templates cannot write to it: `{% set %}`
    writes to each render's own locals)."""

    def __init__(self, host, shared: dict | None = None):
        self.max_output, self.seconds = limits(host)
        self.shared = {"range": safe_range, **(shared or {})}  # the only global (bounded)

    def namespace(self, **values) -> dict:
        """The context of one recipient's renders: the shared values and `values`."""
        namespace = self.shared.copy()
        namespace.update(values)
        return namespace

    def render(self, template: jinja2.Template, namespace: dict, label: str) -> str:
        """Render within the output and time limits; TemplateFailure (with the line)."""
        max_output = self.max_output
        plan = getattr(template, "postroom_plan", None)
        if plan is not None:
            # Text and lookups only: no loop, so no time limit to watch; the output is
            # bounded by its values' sizes, checked once joined.
            text = _joined(plan, namespace, template.environment.autoescape)
            if text is not None:
                if len(text) > max_output:
                    raise TemplateFailure(f"template {label}: output larger than {max_output} characters "
                                          f"(template_max_output)")
                return text
        # shared=True: the namespace is the context's parent as it is (jinja would copy
        # globals and values into a new dict for every render).
        context = template.new_context(namespace, shared=True)
        out, size = [], 0
        tid = _watchdog.arm(self.seconds)
        try:
            try:
                # root_render_func, not generate(): one generator less per chunk; a
                # failure goes through jinja's handle_exception as generate() does, so the
                # traceback carries the template's lines.
                for chunk in template.root_render_func(context):
                    size += len(chunk)
                    if size > max_output:
                        raise TemplateFailure(f"template {label}: output larger than {max_output} characters "
                                              f"(template_max_output)")
                    out.append(chunk)
            except TemplateFailure:
                raise
            except Exception:
                template.environment.handle_exception()
            finally:
                fired = _watchdog.disarm(tid)
        except _Timeout:
            fired = True
        except TemplateFailure:
            raise
        except RecursionError:
            raise TemplateFailure(f"template {label}: recursion too deep") from None
        except (jinja2.TemplateError, SecurityError, ArithmeticError, TypeError, ValueError,
                LookupError, OverflowError, MemoryError) as exc:
            raise _failure(label, exc, template.name or label) from None
        if fired:
            raise TemplateFailure(f"template {label}: rendering took longer than {self.seconds:g} s "
                                  f"(template_render_seconds)")
        return "".join(out)


def render(host, template: jinja2.Template, context: dict, label: str) -> str:
    """Render within the output and time limits; TemplateFailure (with the line) on error."""
    renderer = Renderer(host)
    return renderer.render(template, renderer.namespace(**context), label)


def parse_vars(pairs) -> dict:
    """`key=value` pairs from the command line (`--var`) as template values."""
    values = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InvalidInput(f"--var takes key=value with a name for key, not {pair!r}")
        values[key.strip()] = value
    return values


def render_source(host, source: str, context: dict, label: str, html: bool = True) -> str:
    """Compile (against the context's names) and render, in one call."""
    return render(host, compile_template(host, source, label, known=set(context), html=html), context, label)
