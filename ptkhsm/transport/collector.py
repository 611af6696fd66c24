"""The garbage collector held off while a thread is inside Secure Messaging.

A collection may finalise a host's object that calls back into the module on
the same thread (python-pkcs11 ends an abandoned operation so). Inside the
sealing or opening of a record that call would wait forever for the direction
lock its own thread holds, or put its record out of order. The collector is
the process's, so it is held off from the first overlapping hold until the
last release; meanwhile each release runs the young generations' collections
that have fallen due (their finalisers may call the module then), so
overlapping calls do not starve the collector. A host that turns the
collector on or off during a call has that undone when the last call ends.
"""

import gc
import threading

# Re-entrant: a collection may start in here before the collector is off, and a finaliser it
# runs may call the module on this thread (its hold and release leave the count as they found it).
_lock = threading.RLock()
_holders = 0
_was_on = False


def hold():
    global _holders, _was_on
    with _lock:
        if not _holders:
            _was_on = gc.isenabled()
            gc.disable()
        _holders += 1


def release():
    """Called where a finaliser's call may run (it holds nothing a call needs)."""
    global _holders
    with _lock:
        _holders -= 1
        if not _was_on:
            return
        if not _holders:
            gc.enable()
            return
    # others still hold it off: what the collector would have run by now (generations 0
    # and 1 by their thresholds; a full collection waits for the collector to be back on)
    counts, thresholds = gc.get_count(), gc.get_threshold()
    for generation in (1, 0):
        if thresholds[generation] and counts[generation] > thresholds[generation]:
            gc.collect(generation)
            return
