"""Secrets at rest and in logs (docs/security.md): PINs and key values that a run
through the real .so used, succeeding and failing on purpose
(tests/reliability/secrets_child.py), are in no file of the data directory — the
open database's -wal and -shm included — and in no log line or error text the
module wrote at DEBUG. A key value counts as found if any 8 of its bytes in a
row are, raw or hex, in any case."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import MODULE, ROOT, SO_PIN

WINDOW = 8


def _forms(value):
    """The ways a secret can appear: its bytes, and for text also hex and Python's repr."""
    if isinstance(value, str):
        return [value.encode()]
    forms = []
    for start in range(0, max(1, len(value) - WINDOW + 1)):
        window = value[start:start + WINDOW]
        forms += [window, window.hex().encode(), window.hex().upper().encode(),
                  repr(window)[2:-1].encode()]
    return forms


def _run(tmp_path):
    datapath = tmp_path / "data"
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    env = dict(os.environ, ET_PTKC_SW_DATAPATH=str(datapath), PTKHSM_LOG_LEVEL="DEBUG")
    logs = []
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "0"]
    for args in (["--init-token", "--label", "secrets", "--so-pin", SO_PIN],
                 ["--init-pin", "--login", "--so-pin", SO_PIN, "--pin", "us3r-pin-1"]):
        done = subprocess.run(tool + args, capture_output=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        logs.append(done.stdout + done.stderr)
    child = subprocess.run([sys.executable, str(ROOT / "tests" / "reliability" / "secrets_child.py"),
                            MODULE, str(snapshot)], capture_output=True, env=env, timeout=300)
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    used = json.loads(child.stdout.decode().splitlines()[-1])
    logs.append(child.stderr)
    pins = used["pins"] + [SO_PIN]
    secrets = {name: bytes.fromhex(value) for name, value in used["secrets"].items()}
    return datapath, snapshot, b"\n".join(logs), pins, secrets


def test_no_secret_at_rest_in_logs_or_errors(tmp_path):
    datapath, snapshot, logs, pins, secrets = _run(tmp_path)
    assert b"DEBUG: C_Login: CKR_PIN_INCORRECT" in logs  # DEBUG was on: reasons were logged
    files = sorted(p for d in (datapath, snapshot) for p in d.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"ptkhsm.db", "ptkhsm.db-wal", "storage.key"} <= names, names  # the WAL was caught open
    needles = [(name, form) for name, value in secrets.items() for form in _forms(value)]
    needles += [(f"PIN {pin}", form) for pin in pins for form in _forms(pin)]
    for path in files:
        data = path.read_bytes()
        for name, form in needles:
            assert form not in data, f"{name} found in {path.name}"
    for name, form in needles:
        assert form not in logs, f"{name} found in the module's log"


def test_data_directory_and_files_private(tmp_path):
    datapath, _, _, _, _ = _run(tmp_path)
    assert stat.S_IMODE(datapath.stat().st_mode) == 0o700
    for path in datapath.rglob("*"):  # the store's files and ExtToken's directory and files
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_no_secret_in_the_reasons_of_random_failures(tmp_path):
    """The ABI fuzzer's calls at DEBUG (thousands of failures of every kind, each logged
    with its reason): neither PIN nor the value of its AES keys is in the output."""
    binary = tmp_path / "fuzz"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-I", str(ROOT / "shim" / "include"), "-o", str(binary),
                    str(ROOT / "tests" / "fuzz" / "fuzz.c"), "-ldl", "-lpthread"], check=True)
    user_pin, so_pin = "fz-user-pin-77", "fz-so-pin-88"
    # the HSM's token: the walk on ExtToken's slot has open findings (tests/test_fuzz.py)
    env = dict(os.environ, ET_PTKC_SW_DATAPATH=str(tmp_path / "data"), PTKHSM_LOG_LEVEL="DEBUG",
               ET_PTKC_EXTTOKEN_ENABLE="0",
               ET_PTKC_SW_MAX_LOGIN_FAILURES="1000")
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "0"]
    subprocess.run(tool + ["--init-token", "--label", "fz", "--so-pin", so_pin], check=True, capture_output=True,
                   env=env)
    subprocess.run(tool + ["--init-pin", "--login", "--so-pin", so_pin, "--pin", user_pin], check=True,
                   capture_output=True, env=env)
    run = subprocess.run([str(binary), MODULE, "21", "20000", "2", user_pin, so_pin], capture_output=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    logs = run.stdout + run.stderr
    assert logs.count(b"DEBUG: C_") > 1000, "the failures were logged"
    aes_value = bytes(range(1, 18)) + bytes(15)  # tests/fuzz/fuzz.c setup(): CK_BYTE value[32]
    needles = [(f"PIN {pin}", form) for pin in (user_pin, so_pin) for form in _forms(pin)]
    needles += [("the AES key", form) for form in _forms(aes_value[:17])]
    for name, form in needles:
        assert form not in logs, f"{name} found in the module's log"
    for path in (p for p in (tmp_path / "data").rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, form in needles:
            assert form not in data, f"{name} found in {path.name}"


def test_the_session_check_finds_planted_secrets():
    """The whole suite's check (tests/suitelog.py) can fail: a session that leaks a key
    value it used and the suite's PINs, once each where the check looks, fails naming them."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "reliability" / "planted_secret.py")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    out = run.stdout
    kept = re.search(r"\((/tmp/\S*ptkhsm-session-logs-\S+)\): (\d+) FOUND", out)
    try:
        assert run.returncode == 1 and "1 passed" in out, out[-3000:]
        assert kept, out[-3000:]
        planted = "a key value used by tests/reliability/planted_secret.py::test_plant"
        assert re.search(rf"ptkhsm\.log:\d+: {planted}, hex", out), out[-3000:]
        assert re.search(rf"error-texts\.log:\d+: {planted}, bytes repr", out), out[-3000:]
        assert re.search(r"error-texts\.log:\d+: PIN .12345678. .*stderr of python.*planted_secret", out), out[-3000:]
        assert re.search(r"error-texts\.log:\d+: PIN '1234'", out), out[-3000:]  # the captured stdout
    finally:
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)


def test_log_file_shared_and_private(tmp_path):
    """PTKHSM_LOG_FILE: processes append their DEBUG lines to one file, created 0600,
    while stderr keeps its own level."""
    log = tmp_path / "ptkhsm.log"
    env = dict(os.environ, ET_PTKC_SW_DATAPATH=str(tmp_path / "data"), PTKHSM_LOG_FILE=str(log),
               PTKHSM_LOG_LEVEL="ERROR")
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "1"]
    first = subprocess.run(tool + ["--init-token", "--label", "log", "--so-pin", SO_PIN], capture_output=True,
                           env=env, timeout=120)
    failing = [subprocess.run(tool + ["--login", "--pin", "not-the-pin", "-O"], capture_output=True, env=env,
                              timeout=120) for _ in range(2)]
    assert first.returncode == 0 and all(run.returncode != 0 for run in failing)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = [line for line in log.read_text().splitlines() if "DEBUG: C_Login: CKR_" in line]
    assert len({line.split("]")[0] for line in lines}) == 2, lines  # a line from each process
    assert b"DEBUG" not in first.stderr + b"".join(run.stderr for run in failing)


def test_the_session_check_ignores_runs_without_a_key_in_them():
    """A test key with a run of zeros does not make every "000..." of a log a finding (the
    fingerprint pin 000... in test_ctconf.py's stderr was one), and its other bytes still count."""
    from secretscan import Secrets
    found = Secrets()
    key = bytes(16) + bytes(range(0xA0, 0xB0))
    found.add_value(key, "a key with a zero run")
    assert not list(found.scan(b"pinned " + b"0" * 64 + b" " + bytes(16), "a log"))
    assert list(found.scan(b"leak " + key[16:].hex().encode(), "a log"))
