"""ctkmu (its own processes, PTK-C syntax): create, list, delete, backup -> wipe -> restore, compact."""

import os
import shutil
import subprocess
import sys
import tempfile

from ptkhsm import constants as C
from ptkhsm import schema
from ptkhsm.errors import CKRError

from helpers import SO_PIN, USER_PIN, environ, files, find, library, user_session

CTKMU = [os.path.join(os.path.dirname(sys.executable), "ctkmu")]   # the installed entry point


def run(env, *args, check=True):
    result = subprocess.run([*CTKMU, *args], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=120)
    assert not check or result.returncode == 0, result.stderr
    return result


def secrets_files(tmp):
    paths = {}
    for name, value in (("so", SO_PIN), ("pin", USER_PIN), ("pass", b"correct horse battery")):
        paths[name] = os.path.join(tmp, name)
        with open(paths[name], "wb") as f:
            f.write(value + b"\n")
    return paths


def everything(api, s):
    """Every object of the token -> {handle: [every attribute's value or error code]}."""
    types = sorted(schema.SCHEMA)
    out = {}
    for handle in find(api, s, [(C.CKA_TOKEN, True)]):
        out[handle] = [v.rv if isinstance(v, CKRError) else v for v in api.get_attributes(s, handle, types)]
    return out


def test_backup_wipe_restore_brings_back_every_object_byte_for_byte(tmp_path):
    datapath = tempfile.mkdtemp(prefix="ptkhsm-ctkmu-")
    env = environ(datapath)
    p = secrets_files(str(tmp_path))
    run(env, "t", "-s0", "-lbackup", "--so-pin-file", p["so"])
    run(env, "p", "-s0", "--so-pin-file", p["so"], "--new-pin-file", p["pin"])
    run(env, "c", "-s0", "-taes", "-z32", "-nsecret-aes", "-aEDXP", "--pin-file", p["pin"])
    run(env, "c", "-s0", "-tec", "-nsigner", "-aSVP", "--pin-file", p["pin"])
    run(env, "c", "-s0", "-tdes2", "-npublic-des", "-aEDX", "--pin-file", p["pin"])
    listing = run(env, "l", "-s0", "--pin-file", p["pin"]).stdout
    assert listing.count("ExtToken") == 3 and "secret-aes" in listing and "signer" in listing

    lib = library(datapath)
    s = user_session(lib.api)
    before = everything(lib.api, s)
    lib.finalize()
    ods_before = {n: open(path, "rb").read() for n, path in files(datapath).items() if n.endswith(".ods")}
    assert len(before) == 4

    backup = str(tmp_path / "token.bak")
    run(env, "x", "-s0", backup, "--pin-file", p["pin"], "--passphrase-file", p["pass"])
    # Wipe: a freshly initialised token and no ExtToken files.
    shutil.rmtree(os.path.join(datapath, "exttoken"))
    run(env, "t", "-s0", "-lbackup", "--so-pin-file", p["so"])
    run(env, "p", "-s0", "--so-pin-file", p["so"], "--new-pin-file", p["pin"])
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the passphrase\n")
    failed = run(env, "i", "-s0", backup, "--pin-file", p["pin"], "--passphrase-file", str(wrong), check=False)
    assert failed.returncode == 1 and "wrong passphrase" in failed.stderr
    run(env, "t", "-s0", "-lbackup", "--so-pin-file", p["so"])
    run(env, "p", "-s0", "--so-pin-file", p["so"], "--new-pin-file", p["pin"])
    run(env, "i", "-s0", backup, "--pin-file", p["pin"], "--passphrase-file", p["pass"])

    lib = library(datapath)
    s = user_session(lib.api)
    assert everything(lib.api, s) == before
    lib.finalize()
    ods_after = {n: open(path, "rb").read() for n, path in files(datapath).items() if n.endswith(".ods")}
    assert ods_after == ods_before
    with open(backup, "rb") as f:
        raw = f.read()
    assert USER_PIN not in raw and b"correct horse" not in raw


def test_delete_and_compact(tmp_path):
    datapath = tempfile.mkdtemp(prefix="ptkhsm-ctkmu-")
    env = environ(datapath)
    p = secrets_files(str(tmp_path))
    run(env, "t", "-s0", "-lcompact", "--so-pin-file", p["so"])
    run(env, "p", "-s0", "--so-pin-file", p["so"], "--new-pin-file", p["pin"])
    for i in range(6):
        run(env, "c", "-s0", "-tgeneric", "-z64", f"-nk{i % 2}", "-aX", "--pin-file", p["pin"])
    assert "deleted 3" in run(env, "d", "-s0", "-nk0", "--pin-file", p["pin"]).stdout
    ods = [path for n, path in files(datapath).items() if n.endswith(".public.ods")][0]
    before = os.path.getsize(ods)
    out = run(env, "compact", "-s0").stdout
    assert "3 objects kept" in out and os.path.getsize(ods) < before
    listing = run(env, "l", "-s0", "--pin-file", p["pin"]).stdout
    assert listing.count(" k1") == 3 and " k0" not in listing
    bad = run(env, "c", "-s0", "-tnosuch", "-nx", "--pin-file", p["pin"], check=False)
    assert bad.returncode == 1 and "key type" in bad.stderr
