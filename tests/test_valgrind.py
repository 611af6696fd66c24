"""The module under valgrind memcheck, driven by the ABI fuzzer (tests/fuzz/fuzz.c):
no error in the shim, cffi's glue or the host. Suppressions (tests/valgrind/python.supp)
cover only errors inside libpython and one-time leaks of cryptography's module
initialisation. Slow (about a minute): `make valgrind` runs it (PTKHSM_VALGRIND=1)."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import MODULE, ROOT, SO_PIN, USER_PIN, fresh_env, init_token

pytestmark = pytest.mark.skipif(os.environ.get("PTKHSM_VALGRIND") != "1" or not shutil.which("valgrind"),
                                reason="make valgrind runs it (PTKHSM_VALGRIND=1, valgrind installed)")


def test_memcheck_clean(tmp_path):
    binary = tmp_path / "fuzz"
    subprocess.run(["gcc", "-g", "-O1", "-Wall", "-Werror", "-I", str(ROOT / "shim" / "include"), "-o", str(binary),
                    str(ROOT / "tests" / "fuzz" / "fuzz.c"), "-ldl", "-lpthread"], check=True)
    env = fresh_env(ET_PTKC_SW_MAX_LOGIN_FAILURES="1000", PYTHONMALLOC="malloc")
    init_token(env)
    result = subprocess.run(
        ["valgrind", f"--suppressions={ROOT / 'tests' / 'valgrind' / 'python.supp'}", "--error-exitcode=99",
         "--leak-check=full", "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
         "--num-callers=30", str(binary), MODULE, "11", "5000", "2", USER_PIN, SO_PIN],
        capture_output=True, text=True, env=env, timeout=1800)
    summary = re.search(r"ERROR SUMMARY: (\d+) errors.*suppressed: (\d+)", result.stderr)
    print("valgrind:", summary.group(0) if summary else "no summary", result.stdout.strip().splitlines()[-1:])
    assert result.returncode == 0, result.stderr[-8000:]
    assert summary and summary.group(1) == "0"
