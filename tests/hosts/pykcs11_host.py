"""A PyKCS11 program, run by another interpreter from its own venv (tests/test_hosts.py).

pykcs11_host.py MODULE LABEL PIN: find the token, log in, AES key, ECB round
trip, a digest. Prints one JSON line; "in_process" says whether ptkhsm runs in
this interpreter.
"""

import hashlib
import json
import sys

import PyKCS11

MESSAGE = b"PyKCS11 and ptkhsm, 32 bytes ok!"


def main(module, label, pin):
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    slot = next(s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == label)
    session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    session.login(pin)
    key = session.generateKey([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
                               (PyKCS11.CKA_VALUE_LEN, 16), (PyKCS11.CKA_ENCRYPT, True),
                               (PyKCS11.CKA_DECRYPT, True)])
    ecb = PyKCS11.Mechanism(PyKCS11.CKM_AES_ECB, None)
    assert bytes(session.decrypt(key, session.encrypt(key, MESSAGE, ecb), ecb)) == MESSAGE
    digest = bytes(session.digest(MESSAGE, PyKCS11.Mechanism(PyKCS11.CKM_SHA256, None)))
    assert digest == hashlib.sha256(MESSAGE).digest()
    session.logout()
    session.closeSession()
    print(json.dumps({"ok": True, "in_process": "ptkhsm" in sys.modules, "python": "%d.%d" % sys.version_info[:2]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
