"""Mechanism parameters as plain values, decoded from C structs by `ptkhsm.abi`.

Each mechanism row in the registry names one of these kinds; the ABI holds
the decoder per kind. Plain named tuples of ints and bytes, so a future wire
codec can carry them, and cheap to build on every C_*Init call.
"""

from collections import namedtuple

# Parameter kinds a registry row can name.
NONE = "none"          # pParameter must be NULL / ulParameterLen 0
BYTES = "bytes"        # raw bytes (IVs)
OPTIONAL_BYTES = "optional-bytes"  # raw bytes, may be absent
ULONG = "ulong"        # a single CK_ULONG (CK_MAC_GENERAL_PARAMS)
GCM = "gcm"
CTR = "ctr"
PSS = "pss"
OAEP = "oaep"
ECDH1 = "ecdh1"
EDDSA = "eddsa"
KEY_HANDLE = "key-handle"   # CK_OBJECT_HANDLE (CONCATENATE_BASE_AND_KEY)
DERIVE_DATA = "derive-data"  # CK_KEY_DERIVATION_STRING_DATA
CBC_DERIVE = "cbc-derive"   # CK_AES_CBC_ENCRYPT_DATA_PARAMS / DES variant


Mechanism = namedtuple("Mechanism", "type param", defaults=(None,))
GcmParams = namedtuple("GcmParams", "iv iv_bits aad tag_bits")
CtrParams = namedtuple("CtrParams", "counter_bits cb")
PssParams = namedtuple("PssParams", "hash_alg mgf salt_len")
OaepParams = namedtuple("OaepParams", "hash_alg mgf source source_data")
Ecdh1Params = namedtuple("Ecdh1Params", "kdf shared_data public_data")
EddsaParams = namedtuple("EddsaParams", "prehash context")
CbcDeriveParams = namedtuple("CbcDeriveParams", "iv data")


def _kinds():
    from . import constants as C
    kinds = {
        C.CKM_AES_CBC: BYTES, C.CKM_AES_CBC_PAD: BYTES, C.CKM_AES_CTR: CTR, C.CKM_AES_GCM: GCM,
        C.CKM_DES3_CBC: BYTES, C.CKM_DES3_CBC_PAD: BYTES, C.CKM_DES_CBC: BYTES, C.CKM_DES_CBC_PAD: BYTES,
        C.CKM_AES_KEY_WRAP: OPTIONAL_BYTES, C.CKM_AES_KEY_WRAP_PAD: OPTIONAL_BYTES,
        C.CKM_AES_KEY_WRAP_KWP: OPTIONAL_BYTES,
        C.CKM_RSA_PKCS_OAEP: OAEP, C.CKM_RSA_PKCS_PSS: PSS,
        C.CKM_ECDH1_DERIVE: ECDH1, C.CKM_ECDH1_COFACTOR_DERIVE: ECDH1,
        C.CKM_EDDSA: EDDSA, C.CKM_CONCATENATE_BASE_AND_KEY: KEY_HANDLE,
        C.CKM_CONCATENATE_BASE_AND_DATA: DERIVE_DATA, C.CKM_CONCATENATE_DATA_AND_BASE: DERIVE_DATA,
        C.CKM_XOR_BASE_AND_DATA: DERIVE_DATA,
        C.CKM_AES_CBC_ENCRYPT_DATA: CBC_DERIVE, C.CKM_DES3_CBC_ENCRYPT_DATA: CBC_DERIVE,
        C.CKM_AES_ECB_ENCRYPT_DATA: DERIVE_DATA, C.CKM_DES3_ECB_ENCRYPT_DATA: DERIVE_DATA,
        C.CKM_AES_CMAC_GENERAL: ULONG, C.CKM_DES3_CMAC_GENERAL: ULONG,
        C.CKM_AES_MAC_GENERAL: ULONG, C.CKM_DH_PKCS_DERIVE: BYTES,
        C.CKM_EXTRACT_KEY_FROM_KEY: ULONG,  # CK_EXTRACT_PARAMS, a bit index
    }
    for name in dir(C):
        if name.startswith("CKM_SHA") and name.endswith("_RSA_PKCS_PSS"):
            kinds[getattr(C, name)] = PSS
        if name.startswith(("CKM_SHA", "CKM_MD5")) and name.endswith("_HMAC_GENERAL"):
            kinds[getattr(C, name)] = ULONG
    return kinds


# Mechanism -> parameter kind. A mechanism not listed takes no parameter.
KINDS = _kinds()
KEY_HANDLE_MECHANISMS = frozenset(ckm for ckm, kind in KINDS.items() if kind == KEY_HANDLE)


def kind_of(ckm):
    return KINDS.get(ckm, NONE)
