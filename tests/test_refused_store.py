"""A store the module refuses (docs/security.md) makes C_Initialize fail with
CKR_GENERAL_ERROR (its list has no device error) and the reason on stderr; the
store is left as it was and opens once the cause is fixed."""

import os
import subprocess

import pytest

from conftest import MODULE, fresh_env



@pytest.fixture(scope="module")
def host(c_host):
    return c_host


def _calls(host, env):
    return subprocess.run([str(host), MODULE, "calls"], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("cause", ["world-writable directory", "readable key file", "missing key file"])
def test_refused_store_is_general_error_with_reason(host, cause):
    env = fresh_env()
    data = env["ET_PTKC_SW_DATAPATH"]
    assert "C_Initialize=0x0\n" in _calls(host, env).stdout  # creates the store
    key = os.path.join(data, "storage.key")
    saved = open(key, "rb").read()
    if cause == "world-writable directory":
        os.chmod(data, 0o777)
        reason = "group- or world-writable"
    elif cause == "readable key file":
        os.chmod(key, 0o644)
        reason = "chmod 600"
    else:
        os.unlink(key)
        reason = "missing"
    result = _calls(host, env)
    assert "C_Initialize=0x5\n" in result.stdout and "C_GetSlotList=0x190\n" in result.stdout
    assert reason in result.stderr, result.stderr
    os.chmod(data, 0o700)
    with open(key, "wb") as restored:
        restored.write(saved)
    os.chmod(key, 0o600)
    assert "C_Initialize=0x0\n" in _calls(host, env).stdout
