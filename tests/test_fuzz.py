"""The ABI fuzzer (tests/fuzz/fuzz.c) against the real .so; the regression tests of
what it found are in tests/hsm/test_fuzz_findings.py. `make fuzz` runs it for
FUZZ_CALLS (1,000,000) calls on the HSM's token plus every seed of
tests/fuzz/seeds.txt, ExtToken's slot and the network path; here bounded runs
(PTKHSM_FUZZ_CALLS, 150,000 on the HSM's token).

The walks, each with the module's normal slots (ExtToken on slot 0, the HSM's
tokens from slot 1):
- the HSM's token, slot 1 (test_fuzz_new_seed, test_regression_seed);
- ExtToken's slot 0 (test_exttoken_walk);
- the HSM's token through `ptkhsm serve` on a unix socket (test_network_walk).
"""

import os
import random
import re
import subprocess

import pytest

from conftest import MODULE, ROOT, SO_PIN, TRANSPORT, USER_PIN, fresh_env, init_token
from netserver import Server

HERE = ROOT / "tests" / "fuzz"
CALLS = int(os.environ.get("PTKHSM_FUZZ_CALLS", "150000"))
THREADS = int(os.environ.get("PTKHSM_FUZZ_THREADS", "4"))
ALL_SEEDS = os.environ.get("PTKHSM_FUZZ_ALL_SEEDS") == "1"
HSM_SLOT, EXTTOKEN_SLOT = 1, 0


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


def _env(**extra):
    # many wrong PINs are tried: a lock-out would leave the walk outside the user's objects
    return fresh_env(ET_PTKC_SW_MAX_LOGIN_FAILURES="1000", **extra)


def _fuzz(fuzzer, seed, calls, slot=HSM_SLOT, env=None):
    env = env or _env()
    init_token(env, slot=slot)
    result = subprocess.run([str(fuzzer), MODULE, str(seed), str(calls), str(THREADS), USER_PIN, SO_PIN, str(slot)],
                            capture_output=True, text=True, env=env, timeout=calls / 500 + 120)
    summary = re.search(r"calls=(\d+) seconds=([\d.]+) calls_per_second=(\d+) findings=(\d+)", result.stdout)
    print(f"fuzz seed {seed} slot {slot}:", summary.group(0) if summary else result.stdout[-500:])
    findings = sorted({" ".join(line.split()[4:6]) for line in result.stdout.splitlines()
                       if line.startswith("FINDING")})
    if findings:
        print(f"  findings (function code) of seed {seed}:", "; ".join(findings))
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-3000:])
    assert int(summary.group(1)) == calls


@pytest.mark.parametrize("seed", _seeds())
def test_regression_seed(fuzzer, seed):
    _fuzz(fuzzer, seed, 250000 if ALL_SEEDS else 60000)


def test_exttoken_walk(fuzzer):
    seed = int(os.environ.get("PTKHSM_FUZZ_SEED", random.randrange(1 << 32)))
    _fuzz(fuzzer, seed, 250000 if ALL_SEEDS else 30000, slot=EXTTOKEN_SLOT)


@pytest.mark.skipif(TRANSPORT != "inprocess", reason="the suite's module already uses a server")
def test_network_walk(fuzzer, tmp_path):
    """The module as a client of `ptkhsm serve` over a unix socket: every call crosses
    the wire, the server's worker holds the sessions."""
    seed = int(os.environ.get("PTKHSM_FUZZ_SEED", random.randrange(1 << 32)))
    env = _env()
    with Server(tmp_path / "data", "unix", env=env) as server:
        _fuzz(fuzzer, seed, 100000 if ALL_SEEDS else 10000, env=server.env(env))
        assert server.alive(), server.stderr()[-3000:]


def test_fuzz_new_seed(fuzzer):
    seed = int(os.environ.get("PTKHSM_FUZZ_SEED", random.randrange(1 << 32)))
    _fuzz(fuzzer, seed, CALLS)
