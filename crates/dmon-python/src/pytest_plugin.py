"""The pytest plugin `dmon test` runs pytest with, in the interpreter dmon
embeds (so tests import the binary's own `dmon` module, the real nodes).

pytest does the rest: collection (a file named on the command line is
collected whatever its name, so a stream module with tests in it runs),
-k, -x, assertion rewriting, fd-level capture (which catches the lines
dmon's Rust side writes: printer() and log records), async tests refused,
JUnit XML. This only adds what is dmon's: its two option spellings, a
header naming the dmon and Python in use, and Ctrl-C.
"""

import signal
import sys

import dmon


def pytest_addoption(parser):
    # Usage and errors name the command the user typed, not pytest.main().
    parser.prog = "dmon test"
    # dmon test's own spellings, so they work after a path too (where clap
    # hands everything to pytest unparsed).
    group = parser.getgroup("dmon")
    group.addoption(
        "--junit",
        dest="xmlpath",
        metavar="FILE",
        help="the same as --junitxml (dmon test's spelling)",
    )
    group.addoption(
        "--no-capture",
        dest="capture",
        action="store_const",
        const="no",
        help="the same as -s (dmon test's spelling)",
    )


def pytest_configure(config):
    # dmon starts Python without its signal handlers (SIGINT is dmon's);
    # a test run wants Ctrl-C to stop it with pytest's summary.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    return f"dmon {dmon.__version__}, embedded Python {sys.version.split()[0]} ({sys.prefix})"
