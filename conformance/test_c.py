"""C programs: conformance/c/example.c (the example to copy), conformance/c/threads.c (8 threads, one
session pool) and conformance/c/functions.c (which optional functions a module implements).

They are compiled with gcc -Wall -Werror against the OASIS headers in
shim/include; keys are made with pkcs11-tool.
"""

from pathlib import Path

import pytest

from .harness import ROOT, TOKEN_LABEL, USER_PIN, not_supported
from .keys import Keys

CLIENT = "C"
HERE = Path(__file__).resolve().parent
KEYS = {"rsa": "rsa:2048", "ec": "EC:prime256v1"}


class Programs:
    def __init__(self, token):
        self.token = token
        self.keys = Keys(token, "c")
        self.built = {}

    def build(self, name, *libs):
        if name not in self.built:
            binary = self.token.dir / f"c-{name}"
            self.token.run(["gcc", "-Wall", "-Werror", "-O2", "-I", ROOT / "shim" / "include", "-o", binary,
                            HERE / "c" / f"{name}.c", "-ldl", *libs])
            self.built[name] = binary
        return self.built[name]


@pytest.fixture(scope="module")
def programs(token):
    return Programs(token)


@pytest.mark.parametrize("kind", list(KEYS))
def test_example(programs, kind):
    """example.c: dlopen, C_GetFunctionList, C_Initialize, session, login, find key by label, sign, verify"""
    key = programs.keys.pair(KEYS[kind])
    binary = programs.build("example")
    out = programs.token.run([binary, programs.token.module.path, TOKEN_LABEL, USER_PIN, key.label]).stdout
    assert out.startswith("ok: ") and key.label in out, out


def test_threads(programs):
    """threads.c: 8 threads share 4 sessions and the keys; digests, RSA and ECDSA signatures checked"""
    rsa_key, ec_key = programs.keys.pair(KEYS["rsa"]), programs.keys.pair(KEYS["ec"])
    binary = programs.build("threads", "-lpthread")
    result = programs.token.run([binary, programs.token.module.path, TOKEN_LABEL, USER_PIN, rsa_key.label,
                                 ec_key.label, "20"], timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "ok: 8 threads, 4 sessions, 960 operations checked", \
        programs.token.describe(result)


# Functions a module may leave out (CKR_FUNCTION_NOT_SUPPORTED); the last six are PKCS #11 3.0.
OPTIONAL = ["C_GetOperationState", "C_SetOperationState", "C_SignRecoverInit", "C_SignRecover",
            "C_VerifyRecoverInit", "C_VerifyRecover", "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
            "C_SignEncryptUpdate", "C_DecryptVerifyUpdate", "C_WaitForSlotEvent", "C_GetFunctionStatus",
            "C_CancelFunction", "C_LoginUser", "C_SessionCancel", "C_MessageEncryptInit", "C_MessageDecryptInit",
            "C_MessageSignInit", "C_MessageVerifyInit"]
CKR_FUNCTION_NOT_PARALLEL = 0x51
CKR_FUNCTION_NOT_SUPPORTED = 0x54


@pytest.mark.parametrize("function", OPTIONAL)
def test_function(programs, function):
    """functions.c: the function is implemented (answers other than CKR_FUNCTION_NOT_SUPPORTED)"""
    binary = programs.build("functions")
    out = programs.token.run([binary, programs.token.module.path, TOKEN_LABEL, USER_PIN, function]).stdout
    name, value = out.split()
    assert name == function, out
    if value == "no-3.0-interface":
        not_supported("a PKCS #11 2.40 module (no 3.0 interface)")
    rv = int(value, 16)
    if function in ("C_GetFunctionStatus", "C_CancelFunction"):
        assert rv == CKR_FUNCTION_NOT_PARALLEL, f"{function} returned 0x{rv:x}: legacy functions return " \
                                               "CKR_FUNCTION_NOT_PARALLEL"
    elif rv == CKR_FUNCTION_NOT_SUPPORTED:
        not_supported("CKR_FUNCTION_NOT_SUPPORTED")
