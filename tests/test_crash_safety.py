"""kill -9 at random points of object creation, change and destruction, key pair
generation, C_SetPIN and C_InitToken (tests/reliability/crash.py): after each kill
the store opens, every acknowledged change is there and the change in flight is
wholly there or wholly absent. PTKHSM_CRASH_ROUNDS kills (default 220; `make
crash` runs 2,000)."""

import os
import random
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "reliability"))
import crash  # noqa: E402

ROUNDS = int(os.environ.get("PTKHSM_CRASH_ROUNDS", "220"))


def test_kill_9_loses_nothing_acknowledged_and_leaves_nothing_half_made(tmp_path):
    seed = int(os.environ.get("PTKHSM_CRASH_SEED", random.randrange(1 << 30)))
    result = crash.run(tmp_path / "data", ROUNDS, seed)
    print(f"crash seed {seed}:", result)
    assert result["kills"] >= min(ROUNDS, 200)
    assert result["acknowledged"] > ROUNDS  # the kills landed among changes, not before them
    assert 0 < result["in_flight_done"] < ROUNDS  # and some inside a change's commit window
