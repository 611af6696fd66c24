"""RFC 3394's wrapping function W, which ptkhsm writes itself only for caller-chosen
initial values (the default ones go to cryptography's keywrap): checked here against
the RFC's vectors and cryptography, with the default value, so the code the other
values take is the code these vectors pin down."""

import os

import pytest
from cryptography.hazmat.primitives import keywrap

from ptkhsm.hsm.mechanisms.aes_wrap import KW_IV, unwrap_blocks, wrap_blocks

from .test_symmetric import RFC3394


@pytest.mark.parametrize("kek, data, wrapped", RFC3394)
def test_w_matches_rfc3394(kek, data, wrapped):
    kek, data, wrapped = (bytes.fromhex(x) for x in (kek, data, wrapped))
    assert wrap_blocks(kek, KW_IV, data) == wrapped
    assert unwrap_blocks(kek, wrapped) == (KW_IV, data)


def test_w_matches_cryptography_and_carries_other_initial_values():
    for size in (16, 24, 40, 64):
        kek, data = os.urandom(32), os.urandom(size)
        assert wrap_blocks(kek, KW_IV, data) == keywrap.aes_key_wrap(kek, data)
        other = bytes(range(8))
        wrapped = wrap_blocks(kek, other, data)
        assert wrapped != keywrap.aes_key_wrap(kek, data)
        assert unwrap_blocks(kek, wrapped) == (other, data)
