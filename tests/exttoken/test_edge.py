"""ExtToken's answers at its edge: what the ABI fuzzer found on slot 0 (tests/test_fuzz.py's
test_exttoken_walk), and loaded copies the HSM lost underneath (fail-over, restart)."""

import os

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.exttoken.layer import BASE
from ptkhsm.mechparams import Mechanism

from helpers import aes_key, find, fresh, user_session

CMAC = Mechanism(C.CKM_AES_CMAC)


def _rv(call, *args):
    with pytest.raises(CKRError) as err:
        call(*args)
    return err.value.rv


def _copy_of(api, key):
    """The HSM handle of an external object's loaded copy."""
    return api._cache[key - BASE][1]


def _sign(api, s, key):
    api.sign_init(s, CMAC, key)
    return api.sign(s, b"data", 16)


# -- found by the fuzzer (seeds 2, 3, 9 on slot 0) ------------------------------------------
def test_a_loaded_copy_cannot_be_named_by_its_hsm_handle():
    # seed 3: C_DestroyObject of a stray handle that was a loaded copy, then C_FindObjectsInit on a
    # non-indexed attribute answered CKR_OBJECT_HANDLE_INVALID (the cache still believed it loaded)
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True)
    _sign(api, s, key)
    copy = _copy_of(api, key)
    for call, args, rv in ((api.destroy_object, (s, copy), C.CKR_OBJECT_HANDLE_INVALID),
                           (api.get_attributes, (s, copy, [C.CKA_VALUE]), C.CKR_OBJECT_HANDLE_INVALID),
                           (api.set_attributes, (s, copy, [(C.CKA_LABEL, b"x")]), C.CKR_OBJECT_HANDLE_INVALID),
                           (api.sign_init, (s, CMAC, copy), C.CKR_KEY_HANDLE_INVALID)):
        assert _rv(call, *args) == rv
    assert find(api, s, [(C.CKA_LABEL, b"k"), (C.CKA_VALUE, bytes(16))]) == [key]
    assert find(api, s, [(C.CKA_TOKEN, False)]) == []          # nor do finds return it
    lib.finalize()


def test_the_external_tokens_own_objects_cannot_be_named_by_hsm_handle():
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    aes_key(api, s, b"k", bytes(16))
    for handle in api.internal_objects().values():
        assert _rv(api.destroy_object, s, handle) == C.CKR_OBJECT_HANDLE_INVALID
        assert _rv(api.get_attributes, s, handle, [C.CKA_LABEL]) == C.CKR_OBJECT_HANDLE_INVALID
    assert len(find(api, s, [(C.CKA_LABEL, b"k")])) == 1      # the master keys are still there
    lib.finalize()


def test_a_private_object_after_a_logout_underneath_is_an_invalid_handle():
    # seeds 2 and 9 (4 threads): C_Login and C_Logout racing left the layer believing the user
    # logged in; loading a private object then answered CKR_UNWRAPPING_KEY_HANDLE_INVALID (the
    # private master key out of sight) to C_GetAttributeValue, C_SignInit, C_CopyObject...
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True)
    api.lower.logout(s)                        # the layer is not told
    assert _rv(api.get_attributes, s, key, [C.CKA_VALUE]) == C.CKR_OBJECT_HANDLE_INVALID
    assert _rv(api.sign_init, s, CMAC, key) == C.CKR_KEY_HANDLE_INVALID
    lib.finalize()


def test_the_layers_own_failures_are_device_errors_with_the_reason_logged(caplog):
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True)
    files = api.external_files()
    entry = files.index[key - BASE]
    log = files.logs[entry.kind]
    os.ftruncate(log.fd, entry.offset + 10)    # the record is gone from the file
    rv = _rv(api.get_attributes, s, key, [C.CKA_VALUE])
    assert rv == C.CKR_DEVICE_ERROR
    assert "is damaged" in caplog.text
    lib.finalize()


# -- loaded copies the HSM lost -------------------------------------------------------------
def test_a_loaded_copy_lost_underneath_is_loaded_again():
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True)
    mac = _sign(api, s, key)
    api.lower.destroy_object(api._loader, _copy_of(api, key))    # as a fail-over would
    assert _sign(api, s, key) == mac
    api.lower.destroy_object(api._loader, _copy_of(api, key))
    assert api.get_attributes(s, key, [C.CKA_VALUE]) == [bytes(16)]
    api.lower.destroy_object(api._loader, _copy_of(api, key))
    api.digest_init(s, Mechanism(C.CKM_SHA256))
    api.digest_key(s, key)
    assert len(api.digest_final(s, 32)) == 32
    assert api.loaded_count() == 1
    lib.finalize()


def test_a_lost_loader_session_is_opened_again():
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True)
    other = aes_key(api, s, b"o", bytes(16), SENSITIVE=False, SIGN=True)
    mac = _sign(api, s, key)
    api.lower.close_session(api._loader)      # a server restart loses it, and the copies with it
    assert _sign(api, s, key) == mac
    _sign(api, s, other)                       # not loaded before: loads in the new loader session
    lib.finalize()


def test_a_master_key_handle_gone_stale_is_found_again_never_made_anew():
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k", bytes(16), SENSITIVE=False, SIGN=True, PRIVATE=False)
    masters = api._token.masters
    real = dict(masters)
    masters[0] = 0x3FFFFFF0                                   # as if the HSM renumbered it
    assert len(_sign(api, s, key)) == 16
    assert api._token.masters == real
    assert len(find(api.lower, s, [(C.CKA_LABEL, b"ExtToken"), (C.CKA_CLASS, C.CKO_SECRET_KEY)])) == 2
    lib.finalize()


# -- what a find asks of the HSM underneath (each call a round trip over the network) ------------
def test_a_find_asks_the_hsm_once_and_gets_every_match(monkeypatch):
    _, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"k")
    _sign(api, s, key)      # the key's loaded copy is a session object of the HSM that matches
    made = [api.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, False), (C.CKA_LABEL, b"k")])
            for _ in range(1500)]   # more than one C_FindObjects batch of the layer's used to take
    asked = []
    for name in ("find_init", "find", "find_final", "find_all"):
        monkeypatch.setattr(api.lower, name, lambda *a, _f=getattr(api.lower, name), _n=name:
                            asked.append(_n) or _f(*a))
    template = [(C.CKA_LABEL, b"k")]
    assert sorted(find(api, s, template)) == sorted(made + [key])
    assert asked == ["find_all"]
    # find_all through the layer: the same handles, and an active find of the session stays as it was
    api.find_init(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY)])
    assert sorted(api.find_all(s, template)) == sorted(made + [key])
    assert api.find(s, 10) == [key]
    api.find_final(s)
