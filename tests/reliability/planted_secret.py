"""Run by tests/test_secrets.py::test_the_session_check_finds_planted_secrets as a pytest
session of its own (not collected by the suite: no test_ prefix). It uses a key value
and PINs as the suite does, then leaks each once where the session check looks: the
module's log (hex), a CKRError's reason (bytes repr), a subprocess's stderr (the SO
PIN) and the test's captured stdout (the user PIN, labelled). The session must fail."""

import subprocess
import sys

from pkcs11 import Attribute, KeyType, ObjectClass

from conftest import SO_PIN, USER_PIN

PLANTED = bytes.fromhex("91a7c3d5e6f80112233445566778899aabbccddeeff0015e7e7ab1e5eed5a17e")


def test_plant(session):
    session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                           Attribute.VALUE: PLANTED, Attribute.TOKEN: False})
    from ptkhsm.constants import CKR_GENERAL_ERROR
    from ptkhsm.errors import CKRError
    from ptkhsm.log import logger
    logger.debug("planted %s", PLANTED[:12].hex())
    CKRError(CKR_GENERAL_ERROR, f"planted {PLANTED[16:28]!r}")
    subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write('planted ' + {SO_PIN!r})"],
                   capture_output=True, check=True)
    print(f"planted PIN {USER_PIN}")
