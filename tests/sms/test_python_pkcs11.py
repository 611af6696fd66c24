"""python-pkcs11's own suite through libptkhsm.so against an HSM with all four SMS flags
set (No clear PINs, Auth protection, Full SMS encryption and signing), in process and over
TCP: every session call crosses as a sealed record and nothing of the suite changes."""

import os
import re
import subprocess

import pytest

from conftest import MODULE, SO_PIN, USER_PIN, init_token
from hostenv import host_venv, interpreter
from netserver import Server
from ptkhsm import constants as C
from smsutil import env_for, set_flags

from test_upstream_python_pkcs11 import MIN_PASSED, OURS, SUITE, SUITE_NEEDS

ALL_FOUR = C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN


@pytest.mark.parametrize("transport", ["inprocess", "tcp"])
def test_upstream_suite_with_all_four_flags(tmp_path, transport):
    assert (SUITE / "tests").is_dir(), f"{SUITE} missing: run `make install`"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PTKHSM", "VIRTUAL_ENV", "ET_"))}
    env.update(env_for(tmp_path / "hsm"))
    env.pop("ET_PTKC_EXTTOKEN_ENABLE")
    set_flags(dict(env, ET_PTKC_EXTTOKEN_ENABLE="0"), ALL_FOUR, init_user=False)
    server = None
    if transport == "tcp":
        server = Server(env["ET_PTKC_SW_DATAPATH"], "tcp", env=env)
        env["ET_HSM_NETCLIENT_SERVERLIST"] = server.address
    try:
        init_token(env, label="upstream")
        env.update(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="upstream", PKCS11_TOKEN_PIN=USER_PIN,
                   PKCS11_TOKEN_SO_PIN=SO_PIN)
        result = subprocess.run([host_venv(interpreter(OURS), SUITE_NEEDS), "-m", "pytest", "-q", "-p",
                                 "no:cacheprovider", "tests"],
                                cwd=SUITE, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        if server is not None:
            server.stop()
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    print(transport, summary)
    assert counts.get("failed", 0) == 0 and counts.get("errors", counts.get("error", 0)) == 0, result.stdout[-5000:]
    assert counts.get("passed", 0) >= MIN_PASSED[OURS], summary
