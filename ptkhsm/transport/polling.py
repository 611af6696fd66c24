"""Looking for a frame a little while before sleeping in recv (docs/network.md, "Polling").

Waking a thread that sleeps in recv costs more, on a virtual machine, than a
short call's whole round trip, and the woken thread runs cold. So a reader
that expects a frame soon looks for it with non-blocking recvs for a short
while first. Between looks it yields its CPU: a peer on the same CPU runs
first. A yield that took long means another thread wanted that CPU (the
machine is busy): then a sleeping reader costs nobody anything and a looking
one steals a core, so polling stops for a while. A process that may run on
one CPU only never polls.
"""

import os
import time

CONTENDED = 500e-6  # a yield this long gave the CPU to another thread (a hiccup of the VM is rarer)
BACKOFF = 1.0       # seconds without polling after that


class Poll:
    def __init__(self, seconds):
        # On one CPU the peer can only answer once the looking thread lets it run: never look.
        self.seconds = seconds if len(os.sched_getaffinity(0)) > 1 else 0
        self._off_until = 0.0

    def deadline(self):
        """-> when to stop looking, or None: sleep at once (polling is off, or backed off)."""
        if not self.seconds:
            return None
        now = time.perf_counter()
        return None if now < self._off_until else now + self.seconds

    def again(self, deadline):
        """Nothing yet: yield the CPU -> whether to look once more."""
        before = time.perf_counter()
        os.sched_yield()
        now = time.perf_counter()
        if now - before > CONTENDED:
            self._off_until = now + BACKOFF
            return False
        return now <= deadline
