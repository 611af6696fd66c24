"""ctconf, the installed command: the adapter block, -f letters / -f0 with the Admin SO PIN
from a file, -n, the refused -c/-d, locally and against a remote `ptkhsm serve`."""

import subprocess
import sys
from pathlib import Path

from netserver import Server
from smsutil import env_for

CTCONF = str(Path(sys.executable).parent / "ctconf")


def ctconf(env, *args):
    return subprocess.run([CTCONF, *args], env=env, capture_output=True, text=True, timeout=120)


def block(out):
    return {k.strip(): v.strip() for k, v in (line.split(" : ", 1) for line in out.splitlines() if " : " in line)}


def test_local_adapter_block_flags_and_init(tmp_path):
    import os
    env = dict(os.environ, **env_for(tmp_path / "hsm"))
    pin = tmp_path / "so.pin"
    pin.write_text("12345678\n")
    first = ctconf(env)
    assert first.returncode == 0, first.stderr
    shown = block(first.stdout)
    assert first.stdout.startswith("Current Adapter Configuration for Device 0:")
    assert shown["Serial Number"].strip() == "PTK0000001" and shown["Security Mode"] == "Default (No flags set)"
    assert shown["Number of Slots"] == "3" and shown["FW Version"] == "5.10.00"
    assert len(shown["SMS Identity"]) == 64
    assert ctconf(env, "-n2", "--so-pin-file", str(pin)).returncode == 0      # the Admin Token
    assert ctconf(env, "-fnuNU", "--so-pin-file", str(pin)).returncode == 0
    assert block(ctconf(env).stdout)["Security Mode"] == ("No clear PINs, Auth protection, Full secure message "
                                                          "encryption, Full secure message signing")
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("00000000\n")
    refused = ctconf(env, "-f0", "--so-pin-file", str(wrong))
    assert refused.returncode == 1 and "CKR_PIN_INCORRECT" in refused.stderr
    assert ctconf(env, "-f0", "--so-pin-file", str(pin)).returncode == 0
    assert block(ctconf(env).stdout)["Security Mode"] == "Default (No flags set)"
    assert ctconf(env, "-fz", "--so-pin-file", str(pin)).returncode == 1
    slots = ctconf(env, "-c1")
    assert slots.returncode == 1 and "fixed number of user slots" in slots.stderr
    assert ctconf(env, "--firmware", "5.00.00", "--so-pin-file", str(pin)).returncode == 0
    assert block(ctconf(env).stdout)["FW Version"] == "5.00.00"


def test_remote_hsm(tmp_path):
    import os
    env = dict(os.environ, **env_for(tmp_path / "hsm"))
    pin = tmp_path / "so.pin"
    pin.write_text("12345678\n")
    local = block(ctconf(env).stdout)
    assert ctconf(env, "-n2", "--so-pin-file", str(pin)).returncode == 0  # at the console first
    with Server(env["ET_PTKC_SW_DATAPATH"], "tcp", env=env) as server:
        remote_env = dict(env, ET_HSM_NETCLIENT_SERVERLIST=server.address,
                          ET_PTKC_SW_DATAPATH=str(tmp_path / "client"))
        remote = ctconf(remote_env)
        assert remote.returncode == 0, remote.stderr
        shown = block(remote.stdout)
        assert shown["SMS Identity"] == local["SMS Identity"] and server.address in shown["Transport Mode"]
        assert ctconf(remote_env, "-fu", "--so-pin-file", str(pin)).returncode == 0
        assert block(ctconf(remote_env).stdout)["Security Mode"] == "Auth protection"
        pinned = dict(remote_env, ET_PTKC_PTK0000001_SMS_IDENTITY="00" * 32)
        failed = ctconf(pinned)
        assert failed.returncode == 1 and "CKR_CANNOT_DERIVE_KEYS" in failed.stderr
