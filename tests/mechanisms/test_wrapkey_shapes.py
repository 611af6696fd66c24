"""The whole-object cryptograms' attribute blocks are read by a loop the first time a shape
(the entries' types, lengths and presence) is seen, then by one struct.unpack per block of
that shape (wrapkey._Layout, ExtToken's cold load). In process, without the .so: every block
must decode as the loop decodes it, and a block that is not of a learnt shape must never be
read as one."""

import random

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.hsm import policy
from ptkhsm.hsm.mechanisms import wrapkey as W


def _objects(count, seed):
    """AES keys of many shapes: labels and IDs of several lengths, dates, mechanism lists,
    wrap templates, and every boolean both ways."""
    rng = random.Random(seed)
    for _ in range(count):
        template = {C.CKA_CLASS: C.CKO_SECRET_KEY, C.CKA_KEY_TYPE: C.CKK_AES, C.CKA_TOKEN: rng.random() < .5,
                    C.CKA_LABEL: rng.randbytes(rng.randint(0, 5)), C.CKA_SIGN: rng.random() < .5,
                    C.CKA_VALUE: rng.randbytes(rng.choice((16, 24, 32))), C.CKA_EXTRACTABLE: rng.random() < .5}
        if rng.random() < .5:
            template[C.CKA_ID] = rng.randbytes(rng.randint(0, 3))
        if rng.random() < .3:
            template[C.CKA_START_DATE] = b"20261202"
        if rng.random() < .3:
            template[C.CKA_ALLOWED_MECHANISMS] = (C.CKM_AES_CMAC,) * rng.randint(0, 2)
        if rng.random() < .2:
            template[C.CKA_WRAP_TEMPLATE] = ((C.CKA_TOKEN, False),)
        yield policy.with_identity(policy.new_object(template, policy.CREATE))


def _loop(block):
    """What the loop makes of a block: its values, or the failure's type."""
    try:
        values, count, _ = W._parse_block(block)
    except (W.Malformed, CKRError) as exc:   # CKRError: schema.decode's
        return type(exc).__name__
    return values if count == len(values) else "Malformed"


def _decoded(block):
    try:
        return W._decode_block(block)[0]
    except (W.Malformed, CKRError) as exc:
        return type(exc).__name__


def test_every_shape_decodes_as_the_loop_does():
    W._LAYOUTS.clear()
    for attrs in _objects(400, seed=1):
        clear, secret = W.split(attrs)
        first, again = W.decode_object(clear, secret), W.decode_object(clear, secret)
        assert first == again == attrs and list(again) == list(first)
        assert W._decode_block(clear)[0] == W._parse_block(clear)[0]
    assert W._LAYOUTS  # the shapes were learnt (and then used)


def test_a_changed_bit_is_never_read_as_a_learnt_shape():
    """Each bit of a block of a learnt shape flipped: the result is the loop's, value or failure
    (a flipped type, length or presence is another shape; a flipped value byte the same one)."""
    W._LAYOUTS.clear()
    for attrs in _objects(12, seed=2):
        clear, _ = W.split(attrs)
        W._decode_block(clear)
        for i in range(len(clear)):
            for bit in range(8):
                changed = bytearray(clear)
                changed[i] ^= 1 << bit
                changed = bytes(changed)
                assert _decoded(changed) == _loop(changed), (i, bit)


def test_a_type_twice_is_refused_whatever_was_learnt():
    W._LAYOUTS.clear()
    label, check = (C.CKA_LABEL, b"ab"), (C.CKA_ID, b"cd")
    good = W.encode_attributes([(C.CKA_CLASS, W._raw(C.CKA_CLASS, C.CKO_DATA)), label, check])
    twice = W.encode_attributes([(C.CKA_CLASS, W._raw(C.CKA_CLASS, C.CKO_DATA)), label, (C.CKA_LABEL, b"cd")])
    assert len(good) == len(twice)
    assert W._decode_block(good)[0] == {C.CKA_CLASS: C.CKO_DATA, C.CKA_LABEL: b"ab", C.CKA_ID: b"cd"}
    with pytest.raises(W.Malformed):
        W._decode_block(twice)
