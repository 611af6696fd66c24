"""What the ABI fuzzer (tests/test_fuzz.py) found, as plain tests of the engine."""

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.mechparams import Mechanism

from hsm_engine import hsm, rv_of, user_session  # noqa: F401 (fixture)


def test_after_a_length_query_only_the_same_call(hsm):
    s = user_session(hsm)
    hsm.digest_init(s, Mechanism(C.CKM_SHA256))
    hsm.digest(s, b"one", None)  # length query: the hash is computed and kept
    assert rv_of(hsm.digest, s, b"two", 64) == C.CKR_ARGUMENTS_BAD  # not the finished hash again
    assert rv_of(hsm.digest, s, b"one", 64) == C.CKR_OPERATION_NOT_INITIALIZED  # and the operation ended
    hsm.digest_init(s, Mechanism(C.CKM_SHA256))
    hsm.digest_update(s, b"one")
    hsm.digest_final(s, None)
    assert rv_of(hsm.digest_update, s, b"more") == C.CKR_ARGUMENTS_BAD
    hsm.digest_init(s, Mechanism(C.CKM_SHA256))
    hsm.digest(s, b"one", None)
    assert len(hsm.digest(s, b"one", 64)) == 32  # the convention itself still works


def test_session_closed_while_adding_an_object(hsm):
    s = user_session(hsm)
    session, token = hsm._session(s)
    other = hsm.open_session(0, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION)
    hsm.close_session(s)  # as another thread would, between the lookup and the insert
    attrs = {C.CKA_CLASS: C.CKO_DATA, C.CKA_TOKEN: False, C.CKA_PRIVATE: False}
    with pytest.raises(CKRError) as info:
        hsm._add_objects(session, token, [attrs])
    assert info.value.rv == C.CKR_SESSION_CLOSED
    assert not hsm.session_objects  # nothing orphaned
    hsm.close_session(other)
