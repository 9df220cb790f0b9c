"""Loads a dmon stream module: a Python or Hy file, or a module name.

Embedded in the dmon binary and run inside its interpreter. Failures raise
LoadError with one message that names the file, the line and the reason.
"""

import ast
import importlib.util
import os
import sys
import traceback
import types


class LoadError(Exception):
    """The stream module could not be loaded; str() says where and why."""


HY_MISSING = (
    "{path} is a Hy stream module, but Hy is not installed in the Python dmon "
    "embeds ({python}); install it with `{python} -m pip install hy`, or into a "
    "virtualenv that is active or named by VIRTUAL_ENV"
)


def load_path(path):
    """Executes the .py or .hy file at `path` as a fresh module and returns it."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such stream module file")
    name = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(path)
    if folder not in sys.path:
        # Lets the stream module import its neighbours.
        sys.path.insert(0, folder)
    if path.endswith(".hy"):
        return _load_hy(name, path)
    # Compiled from the source every time, never from __pycache__: its
    # one-second mtime check would miss an edit that keeps the file's size
    # (a reload right after a save would run the old code).
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return load_source(name, source, path)


def load_name(name):
    """Imports the module `name` from sys.path (a .hy module too)."""
    try:
        import hy  # noqa: F401  (makes .hy modules findable)
    except ImportError:
        pass
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        # A missing parent package of a dotted name: simply not found.
        spec = None
    except (ImportError, ValueError) as e:
        raise LoadError(f"stream module {name!r}: {e}") from None
    if spec is None or spec.origin is None:
        # dmon looked for ./NAME.py and ./NAME.hy before asking for a module.
        raise LoadError(
            f"stream module {name!r} was not found: there is no file {name}.py or "
            f"{name}.hy in the current directory ({os.getcwd()}), and no module "
            f"{name!r} on the Python path ({os.pathsep.join(p or '.' for p in sys.path)}); "
            "pass a file path to --streams, or set PYTHONPATH"
        )
    if spec.origin.endswith(".hy"):
        return load_path(spec.origin)
    if not spec.origin.endswith(".py"):
        raise LoadError(f"stream module {name!r} is {spec.origin}, not a .py or .hy source file")
    # From its source, as load_path does: import_module would hand back the
    # module already in sys.modules, and a reload would run the old code.
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    return load_source(name, source, spec.origin, spec)


def load_source(name, source, filename, spec=None):
    """Executes Python `source` as a fresh module `name` (a dotted name keeps
    its package, for relative imports)."""
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__package__ = name.rpartition(".")[0]
    # The next find_spec(name) (a reload) looks it up here.
    module.__spec__ = spec
    sys.modules[name] = module
    code = _run(filename, lambda: compile(source, filename, "exec"))
    _run(filename, lambda: exec(code, module.__dict__))
    return module


def _load_hy(name, path):
    try:
        import hy
        from hy.models import Expression, Symbol
    except ImportError:
        raise LoadError(HY_MISSING.format(path=path, python=sys.executable)) from None
    import dmon.streams

    module = types.ModuleType(name)
    module.__file__ = path
    # Hy's core `when` macro would silently turn `(when pred child)` into an
    # `if`; in stream modules `when` means dmon's stream.
    module._dmon_when = dmon.streams.when

    def when_stream(*args):
        return Expression([Symbol("_dmon_when"), *args])

    sys.modules[name] = module
    with open(path, encoding="utf-8") as f:
        source = f.read()
    forms = hy.read_many(source, filename=path, skip_shebang=True)
    while True:
        line = None
        try:
            form = next(forms)
            line = getattr(form, "start_line", None)
            # Without these Hy compiles the form as "<string>": tracebacks
            # and node names would not point at the .hy file.
            form.filename, form.source = path, source
            hy.eval(form, module=module, macros={"when": when_stream})
        except StopIteration:
            break
        except Exception as e:
            raise LoadError(_describe(path, e, line)) from None
    return module


def _run(path, thunk):
    try:
        return thunk()
    except LoadError:
        raise
    except (Exception, SystemExit) as e:
        raise LoadError(_describe(path, e)) from None


def _describe(path, exc, fallback_line=None):
    """'path:line: ExcType: message', then the traceback from the user's frames."""
    line = fallback_line
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
        path = exc.filename or path
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
        if mine:
            line = mine[-1].lineno
        elif frames and line is None:
            path, line = frames[-1].filename, frames[-1].lineno
    where = f"{path}:{line}" if line else path
    te = traceback.TracebackException.from_exception(exc)
    # Frames of this loader and of importlib are noise to the user.
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not f.filename.startswith(("dmon/_loader", "<frozen"))]
    )
    detail = "".join(te.format()).rstrip()
    return f"{where}: {type(exc).__name__}: {exc}\n{detail}"


def lambda_source(func):
    """The source text of a lambda, on one line (`lambda e: e.metric > 3`),
    or None when it cannot be found (no source, not Python).

    Reload matches nodes by how they were built: a lambda is named by what
    it says, not by its line, so adding a line above it keeps its node's
    state.
    """
    code = getattr(func, "__code__", None)
    if code is None or code.co_name != "<lambda>":
        return None
    tree, source = _parsed(code.co_filename)
    if tree is None:
        return None
    # The body's first position tells two lambdas on one line apart.
    starts = [
        (line, col)
        for line, end_line, col, end_col in code.co_positions()
        if None not in (line, end_line, col, end_col) and (line, col) != (end_line, end_col)
    ]
    body_start = min(starts) if starts else None
    found = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.Lambda) or node.lineno != code.co_firstlineno:
            continue
        body = (node.body.lineno, node.body.col_offset)
        end = (node.body.end_lineno, node.body.end_col_offset)
        if body_start is None or body <= body_start <= end:
            found = node
            break
    text = found and ast.get_source_segment(source, found)
    return " ".join(text.split()) if text else None


def _parsed(filename):
    """The file's syntax tree and text, as linecache holds them (files, and
    what the shells keep of typed input); (None, None) when not Python."""
    import linecache

    linecache.checkcache(filename)
    source = "".join(linecache.getlines(filename))
    if not source:
        return None, None
    key = (filename, hash(source))
    if key not in _PARSED:
        try:
            _PARSED[key] = ast.parse(source)
        except (SyntaxError, ValueError):
            _PARSED[key] = None
        if len(_PARSED) > 64:
            _PARSED.pop(next(iter(_PARSED)))
    return _PARSED[key], source


_PARSED = {}
