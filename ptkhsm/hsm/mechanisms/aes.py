"""AES: key generation, ECB, CBC, CBC-PAD, CTR and GCM."""

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ... import constants as C
from ... import mechparams as P
from ...errors import CKRError
from . import Buffered, CipherWrap, Row, crypto_errors, register, register_key_type, remembered
from .secret import SecretKeyGen, secret_key_type

LENGTHS = (16, 24, 32)
BLOCK = 16
ECB = modes.ECB()          # holds nothing: one for every context
_ZERO_BLOCK = bytes(BLOCK)


def kcv(value):
    """AES check value (PKCS#11 3.0 §6.8): first 3 bytes of ECB(key, zero block). A whole block
    comes out of update(); finalize() would add nothing (every new AES key asks: ExtToken's
    cold load restores one per object)."""
    return Cipher(algorithms.AES(value), ECB).encryptor().update(_ZERO_BLOCK)[:3]


register_key_type(secret_key_type(C.CKK_AES, LENGTHS, kcv))


class Stream:
    """A cryptography cipher context (with optional PKCS#7 padding) as a PKCS#11 operation."""

    __slots__ = ("_ctx", "_pad", "_unpad", "_length_error")

    def __init__(self, ctx, length_error, pad=False, unpad=False, block_bits=128):
        self._ctx = ctx
        self._pad = padding.PKCS7(block_bits).padder() if pad else None
        self._unpad = padding.PKCS7(block_bits).unpadder() if unpad else None
        self._length_error = length_error

    def update(self, data):
        if self._pad:
            data = self._pad.update(data)
        out = self._ctx.update(data)
        if self._unpad:
            out = self._unpad.update(out)
        return out

    def final(self):
        try:
            out = self._ctx.update(self._pad.finalize()) if self._pad else b""
            out += self._ctx.finalize()
        except ValueError:
            raise CKRError(self._length_error, "input is not a whole number of blocks") from None
        if self._unpad:
            try:
                out = self._unpad.update(out) + self._unpad.finalize()
            except ValueError:
                raise CKRError(C.CKR_ENCRYPTED_DATA_INVALID, "bad padding") from None
        return out

    def oneshot(self, data):
        return self.update(data) + self.final()


def _iv(param):
    if not isinstance(param, bytes) or len(param) != BLOCK:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "AES needs a 16-byte IV")
    return param


def _mode(row, param):
    kind = row.info["mode"]
    if kind == "ecb":
        return ECB
    if kind in ("cbc", "cbc-pad"):
        return modes.CBC(_iv(param))
    raise AssertionError(kind)


def _value(key):
    return key.attrs[C.CKA_VALUE]


def _aes(attrs):
    return algorithms.AES(attrs[C.CKA_VALUE])


def _cipher(row, key, param):
    # The key schedule's algorithm object is the key's; the mode carries this operation's IV.
    return Cipher(remembered(key, "aes", _aes), _mode(row, param))


class Ctr:
    """CKM_AES_CTR. Only the low `counter_bits` of the counter block count (PKCS#11 v3.0,
    CK_AES_CTR_PARAMS): they wrap within themselves and the bits above them never change;
    the counter may not come back to its first value, so more than 2**counter_bits blocks
    is a length error. cryptography's CTR carries into all 128 bits: the key stream is cut
    where the counter field wraps and goes on from a block whose field is zero."""

    __slots__ = ("_algorithm", "_field", "_nonce", "_ctx", "_to_wrap", "_budget", "_length_error")

    def __init__(self, algorithm, param, length_error):
        if not 1 <= param.counter_bits <= 128 or len(param.cb) != BLOCK:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "CTR needs 1..128 counter bits and a 16-byte block")
        block = int.from_bytes(param.cb, "big")
        self._field = 1 << param.counter_bits
        counter = block % self._field
        self._algorithm = algorithm
        self._nonce = block - counter
        self._ctx = Cipher(algorithm, modes.CTR(param.cb)).encryptor()
        self._to_wrap = (self._field - counter) * BLOCK   # bytes until the field wraps
        self._budget = self._field * BLOCK                # bytes before it is back at its start
        self._length_error = length_error

    def update(self, data):
        if len(data) > self._budget:
            raise CKRError(self._length_error, "the CTR counter would come back to its first value")
        self._budget -= len(data)
        out = []
        while len(data) > self._to_wrap:
            out.append(self._ctx.update(data[:self._to_wrap]))
            data = data[self._to_wrap:]
            self._ctx = Cipher(self._algorithm, modes.CTR(self._nonce.to_bytes(BLOCK, "big"))).encryptor()
            self._to_wrap = self._field * BLOCK
        self._to_wrap -= len(data)
        out.append(self._ctx.update(data))
        return b"".join(out)

    def final(self):
        return b""

    def oneshot(self, data):
        return self.update(data)


class Aes(SecretKeyGen, CipherWrap):
    def encrypt(self, row, key, param):
        if row.info["mode"] == "gcm":
            return GcmEncrypt(_value(key), _gcm_param(param))
        if row.info["mode"] == "ctr":
            return Ctr(remembered(key, "aes", _aes), param, C.CKR_DATA_LEN_RANGE)
        ctx = _cipher(row, key, param).encryptor()
        return Stream(ctx, C.CKR_DATA_LEN_RANGE, pad=row.info["mode"] == "cbc-pad")

    def decrypt(self, row, key, param):
        if row.info["mode"] == "gcm":
            return _gcm_decrypt(_value(key), _gcm_param(param))
        if row.info["mode"] == "ctr":  # the same key stream
            return Ctr(remembered(key, "aes", _aes), param, C.CKR_ENCRYPTED_DATA_LEN_RANGE)
        ctx = _cipher(row, key, param).decryptor()
        return Stream(ctx, C.CKR_ENCRYPTED_DATA_LEN_RANGE, unpad=row.info["mode"] == "cbc-pad")


def _gcm_param(param):
    if not isinstance(param, P.GcmParams):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "AES-GCM needs CK_GCM_PARAMS")
    if not 8 <= len(param.iv) <= 128:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "GCM IV must be 8..128 bytes")
    if param.tag_bits not in (32, 64, 96, 104, 112, 120, 128):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"GCM tag of {param.tag_bits} bits")
    return param


class GcmEncrypt:
    __slots__ = ("_value", "_param", "_ctx")

    def __init__(self, value, param):
        self._value, self._param, self._ctx = value, param, None

    def _stream(self):
        if self._ctx is None:
            self._ctx = Cipher(algorithms.AES(self._value), modes.GCM(self._param.iv)).encryptor()
            if self._param.aad:
                self._ctx.authenticate_additional_data(self._param.aad)
        return self._ctx

    def update(self, data):
        return self._stream().update(data)

    def final(self):
        ctx = self._stream()
        return ctx.finalize() + ctx.tag[:self._param.tag_bits // 8]

    def oneshot(self, data):
        if self._param.tag_bits == 128:  # the common case: one pass, one output buffer
            return AESGCM(self._value).encrypt(self._param.iv, data, self._param.aad or None)
        return self.update(data) + self.final()


def _gcm_decrypt(value, param):
    """Decryption releases nothing before the tag is checked (PKCS#11 3.0 §2.14.5)."""
    tag_len = param.tag_bits // 8

    def run(data):
        if len(data) < tag_len:
            raise CKRError(C.CKR_ENCRYPTED_DATA_LEN_RANGE, "shorter than the tag")
        if tag_len == 16 and len(param.iv) >= 8:
            with crypto_errors():
                return AESGCM(value).decrypt(param.iv, data, param.aad or None)
        ctx = Cipher(algorithms.AES(value), modes.GCM(param.iv, data[-tag_len:], min_tag_length=tag_len)).decryptor()
        if param.aad:
            ctx.authenticate_additional_data(param.aad)
        with crypto_errors():
            return ctx.update(data[:-tag_len]) + ctx.finalize()

    return Buffered(run)


_AES = Aes()
_CIPHER = C.CKF_ENCRYPT | C.CKF_DECRYPT
_KEYS = (C.CKK_AES,)
register(
    Row(C.CKM_AES_KEY_GEN, _AES, C.CKF_GENERATE, min_key=16, max_key=32,
        info={"ckk": C.CKK_AES, "lengths": LENGTHS}),
    Row(C.CKM_AES_ECB, _AES, _CIPHER, _KEYS, 16, 32, {"mode": "ecb"}),
    Row(C.CKM_AES_CBC, _AES, _CIPHER, _KEYS, 16, 32, {"mode": "cbc"}),
    Row(C.CKM_AES_CBC_PAD, _AES, _CIPHER | C.CKF_WRAP | C.CKF_UNWRAP, _KEYS, 16, 32, {"mode": "cbc-pad"}),
    Row(C.CKM_AES_CTR, _AES, _CIPHER, _KEYS, 16, 32, {"mode": "ctr"}),
    Row(C.CKM_AES_GCM, _AES, _CIPHER, _KEYS, 16, 32, {"mode": "gcm"}),
)
