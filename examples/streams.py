"""dmon's example stream module: the default when no --streams is given.

Every module-level name containing "stream" is a root; every event goes to
every root.
"""
from dmon.streams import *

# Mail the ops team about every event in the warning state.
stream = when(lambda e: e['state'] == "warning", email("ops@example.com"))

# Print when the running average of all metrics goes above 1.85 (leaving out
# the events dmon streams about itself, tagged "dmon").
average_stream = where('not tagged "dmon"',
                       average(2, when(lambda e: e.metric > 1.85, printer("high average: "))))

# Keep the latest event per host and service; expired ones come back with
# state "expired".
index_stream = index()
