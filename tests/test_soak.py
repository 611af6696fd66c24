"""Soak: 8 threads of mixed operations through the real .so for a bounded time
(PTKHSM_SOAK_SECONDS, default 45; `make soak` runs 20 minutes). No error, no
session or object left behind, and the Python heap flat: its least-squares
slope under 25 bytes per round (before the fix of Token._handle_of, 112 bytes
per round: every destroyed token object kept its handle entry). RSS slope is
reported beside it; allocator arenas make it too coarse to assert on."""

import json
import os
import subprocess
import sys

from conftest import MODULE, ROOT, fresh_env, init_token

SECONDS = float(os.environ.get("PTKHSM_SOAK_SECONDS", "45"))
THREADS = int(os.environ.get("PTKHSM_SOAK_THREADS", "8"))


def test_soak_flat_memory_no_leak_no_error():
    env = fresh_env()
    init_token(env)
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "reliability" / "soak.py"), MODULE,
                             "--seconds", str(SECONDS), "--threads", str(THREADS)],
                            capture_output=True, text=True, env=env, timeout=SECONDS + 300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("soak:", json.dumps(report))
    assert report["error_count"] == 0, report["errors"]
    assert report["rounds"] > 100
    assert report["sessions_left"] == 0
    assert report["objects_after"] == report["objects_before"]
    assert report["heap_slope_bytes_per_round"] < 25, report
