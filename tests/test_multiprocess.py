"""Four writer processes and a reader on one data directory, through the real .so
(tests/reliability/multiproc.py): no error surfaces ("database is locked" would be
CKR_DEVICE_ERROR), the reader only ever sees values their writers wrote, logins race
C_SetPIN in another process, and at the end a fresh process finds exactly what the
writers hold. PTKHSM_MULTIPROC_SECONDS long (default 20; `make multiproc` 300)."""

import json
import os
import subprocess
import sys

from conftest import MODULE, ROOT, SO_PIN, fresh_env

SECONDS = float(os.environ.get("PTKHSM_MULTIPROC_SECONDS", "20"))
SCRIPT = str(ROOT / "tests" / "reliability" / "multiproc.py")


def _init(env):
    # an HSM token: the store's own concurrency (ExtToken's files have theirs, tests/exttoken)
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "1"]
    subprocess.run(tool + ["--init-token", "--label", "race", "--so-pin", SO_PIN], check=True,
                   capture_output=True, env=env)
    subprocess.run(tool + ["--init-pin", "--login", "--so-pin", SO_PIN, "--pin", "race-pin-a"], check=True,
                   capture_output=True, env=env)


def _report(process):
    out, err = process.communicate(timeout=SECONDS + 300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_four_writers_and_a_reader(tmp_path):
    env = fresh_env(ET_PTKC_SW_MAX_LOGIN_FAILURES="1000")  # a login racing C_SetPIN may try the old PIN
    _init(env)
    roles = [("writer", i) for i in range(4)] + [("reader", 0)]
    processes = [subprocess.Popen([sys.executable, SCRIPT, MODULE, role, str(i), str(SECONDS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for role, i in roles]
    reports = [_report(p) for p in processes]
    for report in reports:
        print("multiprocess:", {k: v for k, v in report.items() if k != "objects"})
        assert report["errors"] == [], report
    writers = [r for r in reports if r["role"] == "writer"]
    assert all(r["created"] > 10 and r["destroyed"] > 0 for r in writers)
    assert writers[0]["pin_changes"] > 0 and sum(r["logins"] for r in writers) > 0
    assert reports[-1]["scans"] > 5
    expected = {label: value for r in writers for label, value in r["objects"].items()}
    final = _report(subprocess.Popen([sys.executable, SCRIPT, MODULE, "final", "0", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env))
    assert final["objects"] == expected
