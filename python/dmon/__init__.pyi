"""dmon's stream functions as a Python package."""

from dmon import folds as folds
from dmon import streams as streams
from dmon import testing as testing
from dmon.streams import Event as Event

__version__: str
