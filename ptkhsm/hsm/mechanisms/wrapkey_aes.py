"""CKM_WRAPKEY_AES_KWP (0x80000965), PTK-C's NIST-approved successor of CKM_WRAPKEY_DES3_CBC:
the same whole-object cryptogram (value and attributes, docs/wrapkey-des3-cbc.md), with
AES key wrap with padding (RFC 5649, NIST SP 800-38F KWP) instead of DES3-CBC-PAD and an
AES-256 CMAC instead of the DES one. The byte layout is ours (docs/exttoken.md):

    body    = F(version) F(E) F(a)          version = 01
    wrapped = body F(CMAC(mK, body))        mK: 32 random bytes, tag 16 bytes
    E       = AES-KWP(wK, F(mK) F(cK))

ExtToken uses it under AES-256 master keys (ET_PTKC_EXTTOKEN_MASTERKEY=AES256).
Failures before the MAC is checked are all CKR_SIGNATURE_INVALID, as for the DES3 one.
"""

import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac, keywrap
from cryptography.hazmat.primitives.ciphers import algorithms

from ... import constants as C
from ...errors import CKRError
from . import Row, register
from .wrapkey import Malformed, decode_object, field, fields, signed_part, split

VERSION = b"\x01"
MAC_KEY_LEN = 32


def _mac(key, data):
    ctx = cmac.CMAC(algorithms.AES(key))
    ctx.update(data)
    return ctx


class WrapKeyAesKwp:
    def wrap(self, row, wrapping_key, param, attrs):
        clear, secret = split(attrs)
        mac_key = os.urandom(MAC_KEY_LEN)
        encrypted = keywrap.aes_key_wrap_with_padding(wrapping_key.attrs[C.CKA_VALUE],
                                                      field(mac_key) + field(secret))
        body = field(VERSION) + field(encrypted) + field(clear)
        return body + field(_mac(mac_key, body).finalize())

    def unwrap(self, row, key, param, wrapped):
        try:
            version, encrypted, clear_block, tag = fields(wrapped, 4)
            if version != VERSION:
                raise Malformed
            mac_key, secret_block = fields(keywrap.aes_key_unwrap_with_padding(key.attrs[C.CKA_VALUE], encrypted), 2)
            if len(mac_key) != MAC_KEY_LEN:
                raise Malformed
            _mac(mac_key, signed_part(wrapped, tag)).verify(tag)
        except (Malformed, ValueError, keywrap.InvalidUnwrap, InvalidSignature):
            raise CKRError(C.CKR_SIGNATURE_INVALID, "wrapped object does not verify") from None
        return decode_object(clear_block, secret_block)


register(Row(C.CKM_WRAPKEY_AES_KWP, WrapKeyAesKwp(), C.CKF_WRAP | C.CKF_UNWRAP, (C.CKK_AES,), 16, 32,
             info={"object": True}))
