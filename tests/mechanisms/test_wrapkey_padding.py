"""CKM_WRAPKEY_DES3_CBC decrypts E (CBC, unauthenticated) before it can check the MAC, whose
key is inside. A cryptogram whose E does not decrypt to a well-formed mK, cK (bad padding,
bad framing) must cost the MAC all the same: answered before it, it would tell bad padding
from a bad MAC by its time, a padding oracle on cK. In process, without the .so: the MAC
computations are counted, not timed."""

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.hsm import policy
from ptkhsm.hsm.mechanisms import des
from ptkhsm.hsm.mechanisms import wrapkey as W
from ptkhsm.hsm.objects import Obj

KEY = Obj(1, {C.CKA_CLASS: C.CKO_SECRET_KEY, C.CKA_KEY_TYPE: C.CKK_DES2,
              C.CKA_VALUE: bytes.fromhex("0123456789abcdeffedcba9876543210")}, 0)


def _cryptogram():
    attrs = policy.new_object({C.CKA_CLASS: C.CKO_SECRET_KEY, C.CKA_KEY_TYPE: C.CKK_AES,
                               C.CKA_VALUE: bytes(range(16)), C.CKA_EXTRACTABLE: True}, policy.CREATE)
    return W.WrapKey().wrap(None, KEY, None, attrs)


def _with_e(wrapped, change):
    """The cryptogram with E changed (the framing kept, so the failure is E's)."""
    version, iv, encrypted, clear, tag = W.fields(wrapped, 5)
    body = W.field(version) + W.field(iv) + W.field(change(encrypted)) + W.field(clear)
    return body + W.field(tag)


def _flip_pad(encrypted):
    """The second-to-last block changed: the last block decrypts to other padding bytes."""
    out = bytearray(encrypted)
    out[-des.BLOCK - 1] ^= 0x5A
    return bytes(out)


@pytest.mark.parametrize("change", [_flip_pad, lambda e: e[:des.BLOCK] + e[-des.BLOCK:], lambda e: e[:-1]],
                         ids=["bad padding", "E cut to two blocks", "not whole blocks"])
def test_a_bad_e_still_costs_the_mac(monkeypatch, change):
    wrapped = _cryptogram()
    macs = []
    real = W._mac
    monkeypatch.setattr(W, "_mac", lambda key, data: macs.append(len(data)) or real(key, data))
    W.WrapKey().unwrap(None, KEY, None, wrapped)
    assert len(macs) == 1                       # the good one: one MAC
    bad = _with_e(wrapped, change)
    with pytest.raises(CKRError) as info:
        W.WrapKey().unwrap(None, KEY, None, bad)
    assert info.value.rv == C.CKR_SIGNATURE_INVALID
    assert macs[1:] == [len(W.signed_part(bad, W.fields(bad, 5)[4]))]   # over the same bytes
