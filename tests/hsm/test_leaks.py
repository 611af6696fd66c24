"""Memory kept per object: nothing once the object is destroyed (the soak test,
tests/test_soak.py, watches the same through the real .so from 8 threads)."""

import gc
import tracemalloc

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError

from hsm_engine import RW, hsm, make_hsm, user_session  # noqa: F401 (fixture)


def _data_object(hsm, s, private, label=b"churn"):
    return hsm.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_PRIVATE, private),
                                 (C.CKA_LABEL, label), (C.CKA_VALUE, b"v" * 32)])


def test_destroyed_token_objects_leave_nothing_behind(hsm):
    s = user_session(hsm)

    def churn(n):
        for i in range(n):
            hsm.destroy_object(s, _data_object(hsm, s, private=i % 2 == 0))

    churn(100)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn(600)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~10 KB of sqlite statement cache and dict slack is constant; the leak was 110 bytes per object
    assert grown < 25_000, f"{grown / 600:.0f} bytes kept per destroyed object"


def test_handles_stable_across_logout_and_forgotten_when_deleted_elsewhere(hsm, tmp_path):
    s = user_session(hsm)
    kept, doomed = _data_object(hsm, s, True, b"kept"), _data_object(hsm, s, True, b"doomed")
    hsm.logout(s)
    other = make_hsm(tmp_path)  # another process on the same store deletes one while we are logged out
    s2 = user_session(other)
    other.find_init(s2, [(C.CKA_LABEL, b"doomed")])
    (gone,) = other.find(s2, 10)
    other.destroy_object(s2, gone)
    hsm.login(s, C.CKU_USER, b"1234")
    hsm.find_init(s, [(C.CKA_CLASS, C.CKO_DATA)])
    assert hsm.find(s, 10) == [kept]  # same handle as before the logout
    # A handle is the object's store row: nothing is kept for it once the row is gone.
    assert doomed not in hsm.tokens[0].objects
    with pytest.raises(CKRError) as refused:
        hsm.get_attributes(s, doomed, [C.CKA_LABEL])
    assert refused.value.rv == C.CKR_OBJECT_HANDLE_INVALID
