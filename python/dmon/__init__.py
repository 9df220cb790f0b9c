"""dmon's stream functions as a Python package.

The same native nodes as the dmon binary: build trees with ``dmon.streams``,
run them on a virtual clock with ``dmon.testing`` (pytest, no server), and
type-check stream modules with mypy (the package ships stubs).
"""
import sys as _sys
import types as _types

from dmon import _dmon

# The extension fills itself like the binary's built-in `dmon` module;
# each submodule it holds (streams, folds, testing, ...) becomes importable
# as `dmon.NAME`, so `import dmon.streams` and `from dmon.streams import *`
# work as in a stream module run by dmon.
for _name, _value in vars(_dmon).items():
    if _name.startswith("__") and _name != "__version__":
        continue
    globals()[_name] = _value
    if isinstance(_value, _types.ModuleType):
        _sys.modules.setdefault(f"{__name__}.{_name}", _value)

del _name, _value
