"""`dmon test`: finds and runs tests of stream modules, pytest-style.

Embedded in the dmon binary and run inside its interpreter, so tests see
the same `dmon` module the server runs. Test files are plain pytest files:
`test_*` functions (and `Test*` classes' `test_*` methods) with plain
`assert`s; nothing here is imported by them, so they run unchanged under
pytest.

`main()` returns the exit code: 0 all passed, 1 a test failed, 2 a usage
or collection error, 5 no tests collected (pytest's codes).
"""

import ast
import builtins
import importlib
import importlib.util
import inspect
import linecache
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_NO_TESTS = 0, 1, 2, 5
# (3, an error of the runner itself, is dmon's to report: see src/cmd/test.rs.)

# Directories never searched for tests (as pytest's norecursedirs), besides
# hidden ones and virtualenvs.
SKIP_DIRS = {"__pycache__", "node_modules", "venv", "build", "dist", "target", "CVS", "_darcs"}

# This file's name in tracebacks: its frames are the runner's, not the user's.
RUNNER_FILE = "dmon/_test_runner.py"


class UsageError(Exception):
    """A bad path or -k expression: reported on one line, exit 2."""


# ---------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------


class Item:
    """One test: a function, or a method of a Test* class."""

    def __init__(self, nodeid, file, module_name, func, cls=None):
        self.nodeid = nodeid
        self.file = file
        self.module_name = module_name
        self.func = func
        self.cls = cls
        self.name = func.__name__
        code = getattr(func, "__code__", None)
        self.line = code.co_firstlineno if code else 0
        self.outcome = None  # "passed" | "failed"
        self.report = ""
        self.output = ""
        self.message = ""
        self.exc_type = ""
        self.duration = 0.0

    @property
    def classname(self):
        """As pytest's JUnit XML: the module's dotted name, then the class."""
        return self.module_name + ("." + self.cls.__name__ if self.cls else "")

    def keywords(self):
        """The names -k matches: the file's name, the class, the test (not
        the folders: `-k fixtures` should not pick every test under a
        folder named so)."""
        return [os.path.basename(self.file)] + self.nodeid.split("::")[1:]


class CollectError:
    """A test file that could not be imported."""

    def __init__(self, nodeid, report, message, output):
        self.nodeid = nodeid
        self.report = report
        self.message = message
        self.output = output


def display_path(path):
    """`path` relative to the current directory, when it is under it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def is_test_file(name):
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def is_virtualenv(path):
    return os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def find_files(spec):
    """The files a command-line path names: (file, selected names or None).

    A directory: its test files, recursively, in name order. A file: itself,
    whatever its name (a stream module with tests in it). `FILE::NAME`
    selects one test (or class) in it.
    """
    path, _, names = spec.partition("::")
    if not os.path.exists(path):
        raise UsageError(f"file or directory not found: {spec}")
    if os.path.isdir(path):
        if names:
            raise UsageError(f"{spec}: '::' selects a test in a file, not in a directory")
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and d not in SKIP_DIRS
                and not d.endswith(".egg")
                and not is_virtualenv(os.path.join(dirpath, d))
            )
            found += [(os.path.join(dirpath, f), None) for f in sorted(filenames) if is_test_file(f)]
        return found
    if not path.endswith(".py"):
        raise UsageError(f"{path}: not a Python file (.py)")
    return [(path, names.split("::") if names else None)]


def module_name_and_base(path):
    """As pytest's default (prepend) import mode: the file's module name,
    dotted through the packages (folders with __init__.py) it sits in, and
    the first folder above them, which goes on sys.path."""
    path = os.path.abspath(path)
    base, name = os.path.split(path)
    parts = [os.path.splitext(name)[0]]
    while os.path.isfile(os.path.join(base, "__init__.py")):
        base, package = os.path.split(base)
        parts.insert(0, package)
    return ".".join(parts), base


def import_file(path):
    """Imports the file as pytest would: its base folder first on sys.path
    (so `import streams` beside the test finds streams.py), under its
    dotted name, fresh from source."""
    name, base = module_name_and_base(path)
    if base not in sys.path:
        sys.path.insert(0, base)
    if "." in name:
        importlib.import_module(name.rpartition(".")[0])
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    module = importlib.util.module_from_spec(spec)
    # Two test files of the same name in different folders: the later one
    # replaces the earlier in sys.modules, which pytest refuses instead.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def is_test_function(name, obj):
    return name.startswith("test") and callable(obj) and hasattr(obj, "__code__")


def collect_module(module, file, names):
    """The module's tests in definition order: functions named test*, and
    test* methods of classes named Test* that have no __init__ (pytest
    collects functions and classes the module imported, too)."""
    nodefile = display_path(file)
    items = []
    for name, obj in list(vars(module).items()):
        if names and name != names[0]:
            continue
        if is_test_function(name, obj):
            items.append(Item(f"{nodefile}::{name}", file, module.__name__, obj))
        elif name.startswith("Test") and isinstance(obj, type) and "__init__" not in vars(obj):
            for mname in dir(obj):
                if len(names or ()) > 1 and mname != names[1]:
                    continue
                method = getattr(obj, mname)
                if is_test_function(mname, method):
                    items.append(Item(f"{nodefile}::{name}::{mname}", file, module.__name__, method, obj))
    # dir() sorts by name; pytest runs methods in definition order.
    return sorted_methods(items)


def sorted_methods(items):
    """Methods of one class in definition (line) order, functions as found."""
    out, i = [], 0
    while i < len(items):
        if items[i].cls is None:
            out.append(items[i])
            i += 1
            continue
        j = i
        while j < len(items) and items[j].cls is items[i].cls:
            j += 1
        out += sorted(items[i:j], key=lambda it: it.line)
        i = j
    return out


# ---------------------------------------------------------------------------
# -k expressions: `a and not (b or c)`, each word a case-insensitive
# substring of one of a test's names (pytest's grammar).
# ---------------------------------------------------------------------------


def parse_keyword_expr(text):
    tokens = text.replace("(", " ( ").replace(")", " ) ").split()
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr():
        left = and_expr()
        while peek() == "or":
            take()
            a, b = left, and_expr()
            left = lambda names, a=a, b=b: a(names) or b(names)
        return left

    def and_expr():
        left = not_expr()
        while peek() == "and":
            take()
            a, b = left, not_expr()
            left = lambda names, a=a, b=b: a(names) and b(names)
        return left

    def not_expr():
        tok = peek()
        if tok is None:
            raise UsageError(f"-k {text!r}: expression ends early")
        if tok == "not":
            take()
            inner = not_expr()
            return lambda names: not inner(names)
        if tok == "(":
            take()
            inner = expr()
            if peek() != ")":
                raise UsageError(f"-k {text!r}: missing ')'")
            take()
            return inner
        if tok in ("and", "or", ")"):
            raise UsageError(f"-k {text!r}: unexpected {tok!r}")
        word = take().lower()
        return lambda names: any(word in n.lower() for n in names)

    if not tokens:
        return lambda names: True
    matcher = expr()
    if pos != len(tokens):
        raise UsageError(f"-k {text!r}: unexpected {tokens[pos]!r}")
    return matcher


# ---------------------------------------------------------------------------
# Output capture: at the file-descriptor level, so lines that dmon's Rust
# side writes (printer(), log records) are caught with Python's print().
# ---------------------------------------------------------------------------


class Capture:
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.text = ""
        if not self.enabled:
            return self
        sys.stdout.flush()
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(1), os.dup(2)
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(self.saved[0], 1)
            os.dup2(self.saved[1], 2)
            os.close(self.saved[0])
            os.close(self.saved[1])
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", "replace")
        self.file.close()
        return False


# ---------------------------------------------------------------------------
# Failure reports
# ---------------------------------------------------------------------------

MAX_REPR = 600


def short_repr(value):
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not hide the failure
        text = f"<{type(value).__name__} object: repr failed: {type(e).__name__}: {e}>"
    if len(text) > MAX_REPR:
        text = text[: MAX_REPR - 20] + f"... ({len(text)} chars)"
    return text


def user_frames(tb):
    """The traceback's frames from the test down, without the runner's."""
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != RUNNER_FILE:
            frames.append(tb)
        tb = tb.tb_next
    return frames


def format_traceback(exc, last=None):
    """Short traceback: `file:line: in func` and the source line, per frame,
    then `ExcType: message`, as pytest's --tb=short. `last` = (line, source
    lines) replaces the innermost frame's, and the exception line is left
    to the caller."""
    te = traceback.TracebackException.from_exception(exc)
    stack = [f for f in te.stack if f.filename != RUNNER_FILE and not f.filename.startswith("<frozen")]
    lines = []
    for i, f in enumerate(stack):
        lineno, source = f.lineno, [f.line.strip()] if f.line else []
        if last is not None and i == len(stack) - 1:
            lineno, source = last
        lines.append(f"{display_path(f.filename)}:{lineno}: in {f.name}")
        lines += ["    " + l for l in source]
    if last is None:
        lines += [l.rstrip("\n") for l in te.format_exception_only()]
    return lines


def assert_statement(frame, lineno):
    """The `assert` statement running at `lineno` in `frame`'s file, and
    the file's source; (None, None) when the failure was not an assert
    there (a `raise AssertionError`, or no source)."""
    filename = frame.f_code.co_filename
    source = "".join(linecache.getlines(filename, frame.f_globals))
    if not source:
        return None, None
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return None, None
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= lineno <= (node.end_lineno or node.lineno):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best, source


class Unsafe(Exception):
    """An expression `explain` will not evaluate a second time."""


# Builtins whose call has no side effects on its arguments' values.
SAFE_BUILTINS = {
    id(f)
    for f in (
        len, sorted, list, tuple, set, frozenset, dict, min, max, sum, abs, any, all,
        str, repr, int, float, bool, round, type, isinstance, reversed, enumerate, zip,
        getattr, hasattr, bytes, divmod, hash, ord, chr, format,
    )
}
# Those of them that iterate their arguments: only builtin containers and
# dmon's objects, not generators (a second pass would see them exhausted) or
# user iterables.
ITERATING_BUILTINS = {
    id(f) for f in (list, tuple, set, frozenset, dict, sorted, sum, min, max, any, all, enumerate, zip, reversed)
}
BUILTIN_TYPES = (int, float, complex, bool, str, bytes, list, tuple, dict, set, frozenset, type(None))
# Methods of the builtin types above that only read.
PURE_METHODS = {
    "get", "keys", "values", "items", "count", "index", "startswith", "endswith",
    "lower", "upper", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines",
    "join", "find", "rfind", "replace", "format", "copy", "issubset", "issuperset",
    "union", "intersection", "difference", "isdigit", "casefold", "partition",
}
# Methods of dmon's own Python types that only read what a run captured.
DMON_PURE_METHODS = {"leaving", "get", "keys", "values", "items"}


def is_dmon_object(value):
    module = getattr(type(value), "__module__", "") or ""
    return module == "dmon" or module.startswith("dmon.")


class Evaluator:
    """Evaluates an assert's operands again in the failing frame, to show
    their values. It re-evaluates side-effect-free expressions only —
    names, constants, attributes, subscripts of builtin containers and of
    dmon's objects, arithmetic and comparisons on builtin values, calls to
    builtins like len() and to read-only methods — and gives up (Unsafe) on
    anything else, rather than call user code a second time."""

    def __init__(self, frame):
        self.locals = frame.f_locals
        self.globals = frame.f_globals
        # Names a comprehension binds, innermost last.
        self.scope = {}

    def eval(self, node):
        method = getattr(self, "eval_" + type(node).__name__, None)
        if method is None:
            raise Unsafe(type(node).__name__)
        return method(node)

    def eval_Constant(self, node):
        return node.value

    def eval_Name(self, node):
        for scope in (self.scope, self.locals, self.globals, vars(builtins)):
            if node.id in scope:
                return scope[node.id]
        raise Unsafe(node.id)

    def eval_Attribute(self, node):
        value = self.eval(node.value)
        try:
            return getattr(value, node.attr)
        except Exception as e:
            raise Unsafe(str(e)) from None

    def eval_Subscript(self, node):
        value = self.eval(node.value)
        if not (isinstance(value, BUILTIN_TYPES) or is_dmon_object(value)):
            raise Unsafe("subscript of a user object")
        index = self.eval(node.slice)
        try:
            return value[index]
        except Exception as e:
            raise Unsafe(str(e)) from None

    def eval_Slice(self, node):
        part = lambda n: None if n is None else self.eval(n)
        return slice(part(node.lower), part(node.upper), part(node.step))

    def eval_Tuple(self, node):
        return tuple(self.eval(e) for e in node.elts)

    def eval_List(self, node):
        return [self.eval(e) for e in node.elts]

    def eval_Set(self, node):
        return {self.eval(e) for e in node.elts}

    def eval_Dict(self, node):
        if any(k is None for k in node.keys):
            raise Unsafe("**")
        return {self.eval(k): self.eval(v) for k, v in zip(node.keys, node.values)}

    def builtin_values(self, *values):
        if not all(isinstance(v, BUILTIN_TYPES) for v in values):
            raise Unsafe("operator on a user object")

    def eval_UnaryOp(self, node):
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            if not isinstance(value, BUILTIN_TYPES):
                raise Unsafe("not on a user object")
            return not value
        self.builtin_values(value)
        return _run(ast.Expression(ast.UnaryOp(op=node.op, operand=ast.Name("v", ast.Load()))), v=value)

    def eval_BinOp(self, node):
        a, b = self.eval(node.left), self.eval(node.right)
        self.builtin_values(a, b)
        expr = ast.BinOp(left=ast.Name("a", ast.Load()), op=node.op, right=ast.Name("b", ast.Load()))
        return _run(ast.Expression(expr), a=a, b=b)

    def eval_Compare(self, node):
        values = [self.eval(node.left)] + [self.eval(c) for c in node.comparators]
        self.builtin_values(*values)
        names = [ast.Name(f"v{i}", ast.Load()) for i in range(len(values))]
        expr = ast.Compare(left=names[0], ops=node.ops, comparators=names[1:])
        return _run(ast.Expression(expr), **{f"v{i}": v for i, v in enumerate(values)})

    def eval_BoolOp(self, node):
        value = None
        for operand in node.values:
            value = self.eval(operand)
            if not isinstance(value, BUILTIN_TYPES):
                raise Unsafe("truth of a user object")
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value

    # Comprehensions over builtin containers or dmon's objects (a run's
    # events): `[e.metric for e in out.printed_events]`, the usual operand.
    MAX_ITEMS = 100_000

    def comprehension(self, generators, emit):
        gen = generators[0]
        if gen.is_async:
            raise Unsafe("async for")
        iterable = self.eval(gen.iter)
        if not (isinstance(iterable, BUILTIN_TYPES) or is_dmon_object(iterable)):
            raise Unsafe("iterates a user object")
        saved = dict(self.scope)
        try:
            for n, value in enumerate(iterable):
                if n >= self.MAX_ITEMS:
                    raise Unsafe("too many items")
                self.bind(gen.target, value)
                if all(self.truth(self.eval(c)) for c in gen.ifs):
                    if len(generators) > 1:
                        self.comprehension(generators[1:], emit)
                    else:
                        emit()
        finally:
            self.scope = saved

    def bind(self, target, value):
        if isinstance(target, ast.Name):
            self.scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (tuple, list)):
            if len(target.elts) != len(value) or any(isinstance(t, ast.Starred) for t in target.elts):
                raise Unsafe("unpacking")
            for t, v in zip(target.elts, value):
                self.bind(t, v)
        else:
            raise Unsafe("target")

    def truth(self, value):
        if not (isinstance(value, BUILTIN_TYPES) or is_dmon_object(value)):
            raise Unsafe("truth of a user object")
        return bool(value)

    def eval_ListComp(self, node):
        out = []
        self.comprehension(node.generators, lambda: out.append(self.eval(node.elt)))
        return out

    # A generator expression as a list: the builtins it may be given
    # (all, any, sum, sorted...) give the same result for both.
    eval_GeneratorExp = eval_ListComp

    def eval_SetComp(self, node):
        out = set()
        self.comprehension(node.generators, lambda: out.add(self.eval(node.elt)))
        return out

    def eval_DictComp(self, node):
        out = {}

        def emit():
            out[self.eval(node.key)] = self.eval(node.value)

        self.comprehension(node.generators, emit)
        return out

    def eval_Call(self, node):
        func = self.eval(node.func)
        safe = id(func) in SAFE_BUILTINS
        if not safe and isinstance(node.func, ast.Attribute):
            owner = getattr(func, "__self__", None)
            name = node.func.attr
            safe = (isinstance(owner, BUILTIN_TYPES) and name in PURE_METHODS) or (
                is_dmon_object(owner) and name in DMON_PURE_METHODS
            )
        if not safe:
            raise Unsafe("call")
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise Unsafe("*args")
            args.append(self.eval(a))
        kwargs = {}
        for k in node.keywords:
            if k.arg is None:
                raise Unsafe("**kwargs")
            kwargs[k.arg] = self.eval(k.value)
        if id(func) in ITERATING_BUILTINS and not all(
            isinstance(v, BUILTIN_TYPES) or is_dmon_object(v) for v in [*args, *kwargs.values()]
        ):
            raise Unsafe("iterates a user object")
        try:
            return func(*args, **kwargs)
        except Exception as e:
            raise Unsafe(str(e)) from None


def _run(expr, **names):
    ast.fix_missing_locations(expr)
    try:
        return eval(compile(expr, "<assert>", "eval"), {"__builtins__": {}}, names)
    except Exception as e:
        raise Unsafe(str(e)) from None


def explain_assert(node, source, frame):
    """`assert 3 == 4` with the operands' values, then a `where` line for
    each operand that is not a literal (and for a call's arguments)."""
    ev = Evaluator(frame)
    segment = lambda n: ast.get_source_segment(source, n) or ast.unparse(n)

    def value_of(n):
        try:
            return True, ev.eval(n)
        except Unsafe:
            return False, None
        except RecursionError:
            return False, None

    wheres = []
    seen = set()

    def plain(n):
        """A literal (`4`, `[1, 2]`) or a builtin's name (`len`): its value
        says nothing its source does not."""
        if isinstance(n, ast.Name):
            return n.id not in ev.locals and n.id not in ev.globals and hasattr(builtins, n.id)
        try:
            ast.literal_eval(n)
            return True
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False

    def where(n, value, indent):
        src, text = segment(n), short_repr(value)
        if plain(n) or src == text or src in seen:
            return
        seen.add(src)
        wheres.append(f"{indent}where {text} = {src}")

    def show(n):
        """The operand's value in the one-line form (its source when it is
        not evaluated again); its where lines."""
        ok, value = value_of(n)
        if not ok:
            return segment(n), False, None
        where(n, value, "  ")
        # One level down: a call's arguments, a comparison's operands.
        inner = n.args if isinstance(n, ast.Call) else []
        if isinstance(n, ast.Compare):
            inner = [n.left, *n.comparators]
        for sub in inner:
            sok, svalue = value_of(sub)
            if sok:
                where(sub, svalue, "    ")
        return short_repr(value), True, value

    test = node.test
    detail = []
    if isinstance(test, ast.Compare):
        parts = [show(test.left)[0]]
        for op, right in zip(test.ops, test.comparators):
            parts += [OPS.get(type(op), "?"), show(right)[0]]
        line = "assert " + " ".join(parts)
        detail = compare_detail(test, ev)
    elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        line = "assert not " + show(test.operand)[0]
    elif isinstance(test, ast.BoolOp):
        # As Python ran it: `and` stops at the first false operand; the
        # ones after it were not evaluated, so they are shown as written.
        parts, stopped = [], False
        for v in test.values:
            if stopped:
                parts.append(segment(v))
                continue
            text, ok, value = show(v)
            parts.append(text)
            stopped = ok and isinstance(test.op, ast.And) and not value
        joiner = " and " if isinstance(test.op, ast.And) else " or "
        line = "assert " + joiner.join(parts)
    else:
        line = "assert " + show(test)[0]
    return [line] + wheres + detail


OPS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}


def compare_detail(test, ev):
    """For `a == b` on two lists, tuples, dicts or long strings: where they
    differ, as pytest shows it."""
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return []
    try:
        left, right = ev.eval(test.left), ev.eval(test.comparators[0])
    except (Unsafe, RecursionError):
        return []
    out = []
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        for i, (a, b) in enumerate(zip(left, right)):
            if a != b:
                out.append(f"  at index {i}: {short_repr(a)} != {short_repr(b)}")
                break
        if len(left) != len(right):
            longer, side = (left, "left") if len(left) > len(right) else (right, "right")
            extra = len(longer) - min(len(left), len(right))
            out.append(
                f"  the {side} has {extra} more item{'s' if extra > 1 else ''}, first: "
                f"{short_repr(longer[min(len(left), len(right))])}"
            )
    elif isinstance(left, dict) and isinstance(right, dict):
        differ = [k for k in left if k in right and left[k] != right[k]]
        for k in differ[:5]:
            out.append(f"  at key {short_repr(k)}: {short_repr(left[k])} != {short_repr(right[k])}")
        only_left = [k for k in left if k not in right]
        only_right = [k for k in right if k not in left]
        if only_left:
            out.append(f"  only on the left: {', '.join(short_repr(k) for k in only_left[:10])}")
        if only_right:
            out.append(f"  only on the right: {', '.join(short_repr(k) for k in only_right[:10])}")
    elif isinstance(left, str) and isinstance(right, str) and (len(left) > 40 or len(right) > 40):
        i = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
        out.append(f"  strings differ at index {i}: {short_repr(left[i:i + 30])} != {short_repr(right[i:i + 30])}")
    return out


def failure_report(exc):
    """The report of a test's exception, and its one-line message: a short
    traceback; for a failed `assert`, the whole statement and the values in
    it instead of the exception line."""
    frames = user_frames(exc.__traceback__)
    if isinstance(exc, AssertionError) and frames:
        tb = frames[-1]
        node, source = assert_statement(tb.tb_frame, tb.tb_lineno)
        if node is not None:
            stmt = ast.get_source_segment(source, node, padded=True) or ast.unparse(node)
            lines = format_traceback(exc, last=(node.lineno, textwrap.dedent(stmt).splitlines()))
            explained = explain_assert(node, source, tb.tb_frame)
            message = str(exc)
            if message:
                # `assert x, "why"`: the why first, as Python and pytest show it.
                return lines + [f"AssertionError: {message}"] + explained, message
            return lines + ["AssertionError: " + explained[0]] + explained[1:], explained[0]
    lines = format_traceback(exc)
    return lines, (lines[-1] if lines else type(exc).__name__)


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


class Colors:
    def __init__(self, stream):
        self.on = stream.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, code, text):
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text

    def green(self, text):
        return self.paint("32", text)

    def red(self, text):
        return self.paint("31", text)

    def bold_red(self, text):
        return self.paint("1;31", text)

    def yellow(self, text):
        return self.paint("33", text)


def run_item(item, capture):
    """Runs one test: a fresh instance per method, as pytest does."""
    start = time.perf_counter()
    with Capture(capture) as out:
        try:
            test = getattr(item.cls(), item.name) if item.cls is not None else item.func
            wanted = fixtures_wanted(test)
            unsupported = unsupported_kind(test)
            if unsupported:
                item.outcome = "failed"
                item.exc_type = "TypeError"
                item.message = f"{item.name} is {unsupported}: its body would not run; a test is a plain function"
                item.report = f"{display_path(item.file)}:{item.line}: {item.message}"
            elif wanted:
                item.outcome = "failed"
                item.exc_type = "TypeError"
                item.message = (
                    f"{item.name}({', '.join(wanted)}): dmon test has no fixtures; "
                    "a test takes no arguments"
                )
                item.report = f"{display_path(item.file)}:{item.line}: {item.message}"
            else:
                test()
                item.outcome = "passed"
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from a test fails it too
            item.outcome = "failed"
            item.exc_type = type(exc).__name__
            lines, item.message = failure_report(exc)
            item.report = "\n".join(lines)
    item.output = out.text
    item.duration = time.perf_counter() - start


def unsupported_kind(test):
    """A test whose call would only create a coroutine or generator (pytest
    skips or rejects them too)."""
    if inspect.iscoroutinefunction(test) or inspect.isasyncgenfunction(test):
        return "async"
    if inspect.isgeneratorfunction(test):
        return "a generator (it yields)"
    return None


def fixtures_wanted(test):
    """The parameters pytest would fill from fixtures; dmon test has none, so
    it says so instead of failing with a confusing TypeError."""
    try:
        params = inspect.signature(test).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def main(paths, junit=None, keyword=None, exitfirst=False, capture=True):
    """Collects the tests under `paths`, runs them, reports; the exit code."""
    try:
        return run_tests(paths, junit, keyword, exitfirst, capture)
    finally:
        # dmon never finalises the interpreter, which is what would flush
        # a piped stdout at exit.
        sys.stdout.flush()
        sys.stderr.flush()


def run_tests(paths, junit, keyword, exitfirst, capture):
    start = time.perf_counter()
    colors = Colors(sys.stdout)
    # Ctrl-C stops the run with a summary instead of killing dmon.
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Test runs must not leave __pycache__ folders beside the stream modules.
    sys.dont_write_bytecode = True
    try:
        match = parse_keyword_expr(keyword or "")
        files = files_to_collect(paths or ["."])
    except UsageError as e:
        print(f"dmon test: {e}", file=sys.stderr)
        return EXIT_ERROR

    session = Session(colors, capture, exitfirst)
    session.collect(files, match)
    if not session.interrupted and not (exitfirst and session.errors):
        session.run()
    session.report(time.perf_counter() - start)

    if junit:
        try:
            write_junit(junit, session.ran, session.errors, time.perf_counter() - start)
        except OSError as e:
            print(f"dmon test: cannot write --junit {junit}: {e}", file=sys.stderr)
            return EXIT_ERROR

    if session.errors or session.interrupted:
        return EXIT_ERROR
    if session.failed():
        return EXIT_FAILED
    if not session.ran:
        return EXIT_NO_TESTS
    return EXIT_OK


def files_to_collect(paths):
    """(file, names) to import, each file once (a file named whole and
    FILE::NAME both: the whole file)."""
    files, seen = [], set()
    for spec in paths:
        for path, names in find_files(spec):
            key = os.path.abspath(path)
            if (key, None) in seen or (key, tuple(names or ())) in seen:
                continue
            seen.add((key, tuple(names) if names else None))
            files.append((path, names))
    return files


class Session:
    """One run: what was collected, what ran, and the report."""

    def __init__(self, colors, capture, exitfirst):
        self.colors = colors
        self.capture = capture
        self.exitfirst = exitfirst
        self.items = []  # selected by -k
        self.errors = []  # files that failed to import
        self.deselected = 0
        self.ran = []
        self.interrupted = False

    def failed(self):
        return [i for i in self.ran if i.outcome == "failed"]

    def collect(self, files, match):
        """Imports each file and collects its tests; an ERROR line for a
        file that fails to import, and on to the next."""
        seen = set()
        for path, names in files:
            nodefile = display_path(path)
            error = None
            with Capture(self.capture) as out:
                try:
                    module = import_file(path)
                except KeyboardInterrupt:
                    self.interrupted = True
                except BaseException as exc:  # SystemExit at import too
                    lines = format_traceback(exc)
                    error = CollectError(nodefile, "\n".join(lines), lines[-1] if lines else "", "")
            if self.interrupted:
                return
            if error is None:
                found = collect_module(module, path, names)
                if names and not found:
                    nodefile = f"{nodefile}::{'::'.join(names)}"
                    error = CollectError(nodefile, f"no test named {nodefile}", "not found", "")
            if error is not None:
                error.output = out.text
                self.errors.append(error)
                print(f"{self.colors.red('ERROR')} {nodefile}", flush=True)
                if self.exitfirst:
                    return
                continue
            for item in found:
                if item.nodeid in seen:
                    continue
                seen.add(item.nodeid)
                if match(item.keywords()):
                    self.items.append(item)
                else:
                    self.deselected += 1

    def run(self):
        """Runs the tests, a PASS or FAIL line each as it ends."""
        for item in self.items:
            try:
                run_item(item, self.capture)
            except KeyboardInterrupt:
                self.interrupted = True
                return
            self.ran.append(item)
            word = self.colors.green("PASS") if item.outcome == "passed" else self.colors.red("FAIL")
            print(f"{word} {item.nodeid}", flush=True)
            if self.exitfirst and item.outcome == "failed":
                return

    def report(self, elapsed):
        """Each error's and failure's report, then the summary line."""
        colors = self.colors
        failed = self.failed()
        sections = [("ERROR collecting", e) for e in self.errors] + [("FAIL", i) for i in failed]
        for title, what in sections:
            print()
            print(colors.bold_red(f"=== {title} {what.nodeid} ==="))
            print(what.report)
            if what.output:
                print("--- captured output ---")
                print(what.output.rstrip("\n"))
        passed = len(self.ran) - len(failed)
        counts = []
        if passed:
            counts.append(f"{passed} passed")
        if failed:
            counts.append(f"{len(failed)} failed")
        if self.errors:
            counts.append(f"{len(self.errors)} error{'s' if len(self.errors) > 1 else ''}")
        if self.deselected:
            counts.append(f"{self.deselected} deselected")
        if len(self.ran) < len(self.items):
            counts.append(f"{len(self.items) - len(self.ran)} not run")
        summary = (", ".join(counts) or "no tests collected") + f" in {elapsed:.2f} s"
        if self.interrupted:
            summary = "interrupted: " + summary
        bad = failed or self.errors or self.interrupted
        paint = colors.red if bad else colors.green if passed else colors.yellow
        print()
        print(paint(summary), flush=True)


# ---------------------------------------------------------------------------
# JUnit XML, as pytest writes it (the form Jenkins, GitLab and GitHub
# reporters read)
# ---------------------------------------------------------------------------


def xml_text(text):
    """XML 1.0 cannot hold most control characters, even escaped."""
    return "".join(c if c in "\t\n\r" or c >= " " else f"\\x{ord(c):02x}" for c in text)


def write_junit(path, items, errors, elapsed):
    failures = [i for i in items if i.outcome == "failed"]
    suites = ET.Element("testsuites", name="dmon test")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="dmon test",
        tests=str(len(items) + len(errors)),
        failures=str(len(failures)),
        errors=str(len(errors)),
        skipped="0",
        time=f"{elapsed:.3f}",
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
    )
    for e in errors:
        case = ET.SubElement(suite, "testcase", classname="", name=e.nodeid, time="0")
        err = ET.SubElement(case, "error", message=xml_text(f"collection failure: {e.message}"))
        err.text = xml_text(e.report)
        if e.output:
            ET.SubElement(case, "system-out").text = xml_text(e.output)
    for item in items:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=item.classname,
            name=item.name,
            file=display_path(item.file),
            line=str(item.line),
            time=f"{item.duration:.3f}",
        )
        if item.outcome == "failed":
            fail = ET.SubElement(case, "failure", message=xml_text(item.message), type=item.exc_type)
            fail.text = xml_text(item.report)
        if item.output:
            ET.SubElement(case, "system-out").text = xml_text(item.output)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
