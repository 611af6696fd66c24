"""RFC 3394's wrapping function W, which ptkhsm writes itself only for caller-chosen
initial values (the default ones go to cryptography's keywrap): checked here against
the RFC's vectors and cryptography, with the default value, so the code the other
values take is the code these vectors pin down."""

import os

import pytest
from cryptography.hazmat.primitives import keywrap

from ptkhsm.hsm.mechanisms.aes_wrap import KW_IV, unwrap_blocks, wrap_blocks

# RFC 3394 §4.1, §4.2, §4.6: KEK, key data, ciphertext
VECTORS = [
    ("000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
     "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"),
    ("000102030405060708090A0B0C0D0E0F1011121314151617", "00112233445566778899AABBCCDDEEFF",
     "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
     "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"),
]


@pytest.mark.parametrize("kek, data, wrapped", VECTORS)
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
