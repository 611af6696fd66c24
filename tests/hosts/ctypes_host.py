"""A plain-ctypes PKCS#11 program (tests/test_hosts.py), any Python version, no packages.

ctypes_host.py MODULE [PIN]: initialise, list slots, read slot 0's token label;
with PIN, log in and generate an AES key. Prints one JSON line of return codes.
"""

import ctypes
import json
import sys

CKU_USER, CKF_SERIAL_SESSION, CKF_RW_SESSION = 1, 4, 2
CKM_AES_KEY_GEN, CKA_VALUE_LEN = 0x1080, 0x161


class Attribute(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("value", ctypes.c_void_p), ("length", ctypes.c_ulong)]


class Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", ctypes.c_ulong), ("parameter", ctypes.c_void_p), ("length", ctypes.c_ulong)]


def main(module, pin=None):
    lib = ctypes.CDLL(module)
    out = {"python": "%d.%d" % sys.version_info[:2]}
    out["C_Initialize"] = lib.C_Initialize(None)
    count = ctypes.c_ulong()
    out["C_GetSlotList"] = lib.C_GetSlotList(0, None, ctypes.byref(count))
    out["slots"] = count.value
    info = ctypes.create_string_buffer(256)  # CK_TOKEN_INFO starts with its 32-byte label
    out["C_GetTokenInfo"] = lib.C_GetTokenInfo(0, info)
    out["label"] = info.raw[:32].decode().rstrip()
    if pin:
        session = ctypes.c_ulong()
        out["C_OpenSession"] = lib.C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, None, None,
                                                 ctypes.byref(session))
        out["C_Login"] = lib.C_Login(session, CKU_USER, pin.encode(), len(pin))
        length = ctypes.c_ulong(16)
        template = Attribute(CKA_VALUE_LEN, ctypes.cast(ctypes.byref(length), ctypes.c_void_p),
                             ctypes.sizeof(length))
        key = ctypes.c_ulong()
        out["C_GenerateKey"] = lib.C_GenerateKey(session, ctypes.byref(Mechanism(CKM_AES_KEY_GEN, None, 0)),
                                                 ctypes.byref(template), 1, ctypes.byref(key))
    out["C_Finalize"] = lib.C_Finalize(None)
    out["in_process"] = "ptkhsm" in sys.modules
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
