"""The ABI fuzzer (tests/fuzz/fuzz.c) against the real .so, and the regression tests
of what it found are in tests/hsm/test_fuzz_findings.py. `make fuzz` runs it for FUZZ_CALLS (1,000,000) calls plus every
seed of tests/fuzz/seeds.txt; here a bounded run (PTKHSM_FUZZ_CALLS, 150,000)."""

import os
import random
import re
import subprocess

import pytest

from conftest import MODULE, ROOT, SO_PIN, USER_PIN, fresh_env, init_token

HERE = ROOT / "tests" / "fuzz"
CALLS = int(os.environ.get("PTKHSM_FUZZ_CALLS", "150000"))
THREADS = int(os.environ.get("PTKHSM_FUZZ_THREADS", "4"))
ALL_SEEDS = os.environ.get("PTKHSM_FUZZ_ALL_SEEDS") == "1"


def _seeds():
    lines = [line.split()[0] for line in (HERE / "seeds.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return lines if ALL_SEEDS else lines[:1]


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    binary = tmp_path_factory.mktemp("fuzz") / "fuzz"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-I", str(ROOT / "shim" / "include"), "-o", str(binary),
                    str(HERE / "fuzz.c"), "-ldl", "-lpthread"], check=True)
    return binary


def _fuzz(fuzzer, seed, calls, exttoken=False):
    # many wrong PINs are tried: a lock-out would leave the walk outside the user's objects.
    # The walk is on slot 0: the HSM's token unless `exttoken` (see test_exttoken_seed).
    env = fresh_env(ET_PTKC_SW_MAX_LOGIN_FAILURES="1000", ET_PTKC_EXTTOKEN_ENABLE="1" if exttoken else "0")
    init_token(env)
    result = subprocess.run([str(fuzzer), MODULE, str(seed), str(calls), str(THREADS), USER_PIN, SO_PIN],
                            capture_output=True, text=True, env=env, timeout=calls / 500 + 120)
    summary = re.search(r"calls=(\d+) seconds=([\d.]+) calls_per_second=(\d+) findings=(\d+)", result.stdout)
    print(f"fuzz seed {seed}:", summary.group(0) if summary else result.stdout[-500:])
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-3000:])
    assert int(summary.group(1)) == calls


@pytest.mark.parametrize("seed", _seeds())
def test_regression_seed(fuzzer, seed):
    _fuzz(fuzzer, seed, 250000 if ALL_SEEDS else 60000)


def test_exttoken_seed(fuzzer):
    _fuzz(fuzzer, 2, 60000, exttoken=True)


def test_fuzz_new_seed(fuzzer):
    seed = int(os.environ.get("PTKHSM_FUZZ_SEED", random.randrange(1 << 32)))
    _fuzz(fuzzer, seed, CALLS)
