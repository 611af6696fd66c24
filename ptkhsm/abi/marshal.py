"""C <-> Python values at the ABI, and the buffer rules of PKCS#11 (v2.40 §5.2):
these functions are the only place they are written."""

from _ptkhsm_shim import ffi, lib

from .. import constants as C
from .. import mechparams as P
from .. import schema
from ..errors import BufferTooSmall, CKRError

NULL = ffi.NULL


def _realize_types():
    """Realize every typedef and struct type now, while cffi's init code runs alone.
    cffi builds types lazily on first use, and on GIL builds of Python its lazy
    realization is not thread-safe (python-cffi/cffi#271): threads that first used
    CK_MECHANISM at the same moment aborted the process inside cffi
    (realize_c_type.c, about 1 run in 300 of tests/c/host.c's 16-thread test)."""
    typedefs, structs, _ = ffi.list_types()
    for name in typedefs:
        if ffi.typeof(name).kind == "struct":
            ffi.typeof(f"{name} *")  # the casts of mechanism parameters
    for tag in structs:
        ffi.typeof(f"struct {tag}").fields


_realize_types()
ATTRIBUTE_SIZE = ffi.sizeof("CK_ATTRIBUTE")
MAX_VALUE_LEN = 1 << 26  # a larger ulValueLen is a caller bug (e.g. CK_UNAVAILABLE_INFORMATION)
MAX_DATA_LEN = 1 << 40   # no caller's buffer is a terabyte: a larger length is a bug (e.g. (CK_ULONG)-1)
MAX_TEMPLATE_COUNT = 1 << 16  # nor has a template 65,536 attributes


def require(*pointers):
    if NULL in pointers:
        raise CKRError(C.CKR_ARGUMENTS_BAD, "NULL pointer argument")


def data_in(pointer, length):
    if length == 0:
        return b""
    if pointer == NULL:
        raise CKRError(C.CKR_ARGUMENTS_BAD, "NULL data pointer with a non-zero length")
    return ffi.buffer(pointer, buffer_length(length))[:]


def pin_in(pointer, length):
    """A PIN argument. NULL asks for the protected authentication path, which these tokens
    do not have (CKF_PROTECTED_AUTHENTICATION_PATH is never set): CKR_ARGUMENTS_BAD."""
    require(pointer)
    return data_in(pointer, length)


def buffer_length(length):
    if length > MAX_DATA_LEN:
        raise CKRError(C.CKR_ARGUMENTS_BAD, f"{length} cannot be the length of a buffer")
    return length


def out_size(buffer, length_ptr):
    """The caller's buffer size, None for a length query (buffer NULL)."""
    require(length_ptr)
    return None if buffer == NULL else length_ptr[0]


def deliver(result, buffer, length_ptr, room):
    """Copy `result` out, or report its size (`room` None: the buffer is NULL), or
    BUFFER_TOO_SMALL. `room` is what out_size said. A result that did not fit may
    come as its size alone (an int: the network client's length queries)."""
    size = result if type(result) is int else len(result)
    length_ptr[0] = size
    if room is None:
        return
    if room < size:
        raise BufferTooSmall(size)
    ffi.memmove(buffer, result, size)


def ulongs_out(values, array, count_ptr):
    require(count_ptr)
    if array == NULL:
        count_ptr[0] = len(values)
        return
    if count_ptr[0] < len(values):
        count_ptr[0] = len(values)
        raise BufferTooSmall(len(values))
    for i, value in enumerate(values):
        array[i] = value
    count_ptr[0] = len(values)


def padded(field, text):
    ffi.memmove(field, text, len(text))


def version(field, pair):
    field.major, field.minor = pair


def template_count(pointer, count):
    """The number of attributes of the caller's template, checked before any is read."""
    if count and pointer == NULL:
        raise CKRError(C.CKR_ARGUMENTS_BAD, "NULL template with a non-zero count")
    if count > MAX_TEMPLATE_COUNT:
        raise CKRError(C.CKR_ARGUMENTS_BAD, f"{count} cannot be the size of a template")
    return count


def template_in(pointer, count):
    if template_count(pointer, count) == 0:
        return []
    out = []
    for i in range(count):
        attribute = pointer[i]
        attr_type, length = attribute.type, attribute.ulValueLen
        if length > MAX_VALUE_LEN:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{schema.name(attr_type)}: length {length}")
        if attr_type in schema.TEMPLATE_TYPES:
            if length % ATTRIBUTE_SIZE:
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{schema.name(attr_type)}: not a template")
            inner = ffi.cast("CK_ATTRIBUTE_PTR", attribute.pValue)
            value = tuple(template_in(inner, length // ATTRIBUTE_SIZE))
        else:
            if attribute.pValue == NULL and length:
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{schema.name(attr_type)}: NULL value")
            value = schema.decode(attr_type, data_in(attribute.pValue, length))
        out.append((attr_type, value))
    return out


def attributes_out(pointer, types, values):
    """C_GetAttributeValue's rules, attribute by attribute (`types`: what the caller's
    template asks for, in its order); -> the CKR to return."""
    rv = C.CKR_OK
    for i, attr_type in enumerate(types):
        value = values[i]
        if isinstance(value, CKRError):
            pointer[i].ulValueLen = C.CK_UNAVAILABLE_INFORMATION
            rv = value.rv
        elif attr_type in schema.TEMPLATE_TYPES:
            rv = _template_out(pointer[i], value, rv)
        else:
            raw = schema.encode(attr_type, value)
            if lib.ptkhsm_value_out(pointer, i, raw, len(raw)):  # the shim's copy-out rule
                rv = C.CKR_BUFFER_TOO_SMALL
    return rv


def _template_out(attribute, value, rv):
    """An attribute whose value is a template (CKA_WRAP_TEMPLATE): the caller's array of
    CK_ATTRIBUTEs gets the types and, by the same rules, the values."""
    needed = len(value) * ATTRIBUTE_SIZE
    if attribute.pValue == NULL:
        attribute.ulValueLen = needed
        return rv
    if attribute.ulValueLen < needed:
        attribute.ulValueLen = C.CK_UNAVAILABLE_INFORMATION
        return C.CKR_BUFFER_TOO_SMALL
    inner = ffi.cast("CK_ATTRIBUTE_PTR", attribute.pValue)
    types = [inner_type for inner_type, _ in value]
    for j, inner_type in enumerate(types):
        inner[j].type = inner_type
    inner_rv = attributes_out(inner, types, [v for _, v in value])
    attribute.ulValueLen = needed
    return inner_rv if inner_rv != C.CKR_OK else rv


# -- mechanism parameters -------------------------------------------------------
def _struct(mechanism, ctype):
    if mechanism.pParameter == NULL or mechanism.ulParameterLen != ffi.sizeof(ctype):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"{ctype} expected")
    return ffi.cast(ctype + " *", mechanism.pParameter)[0]


def _param_bytes(pointer, length):
    """data_in's rules, failing as a bad mechanism parameter."""
    try:
        return data_in(pointer, length)
    except CKRError as exc:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"parameter: {exc.args[0]}") from None


def _bytes(m):
    pointer = m.pParameter
    if pointer == NULL:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "parameter missing")
    return _param_bytes(pointer, m.ulParameterLen)


def _optional_bytes(m):
    return None if m.pParameter == NULL or not m.ulParameterLen else _param_bytes(m.pParameter, m.ulParameterLen)


def _ulong(m):
    return int(_struct(m, "CK_ULONG"))


def _gcm(m):
    p = _struct(m, "CK_GCM_PARAMS")
    return P.GcmParams(_param_bytes(p.pIv, p.ulIvLen), p.ulIvBits, _param_bytes(p.pAAD, p.ulAADLen), p.ulTagBits)


def _ctr(m):
    p = _struct(m, "CK_AES_CTR_PARAMS")
    return P.CtrParams(p.ulCounterBits, ffi.buffer(p.cb)[:])


def _pss(m):
    p = _struct(m, "CK_RSA_PKCS_PSS_PARAMS")
    return P.PssParams(p.hashAlg, p.mgf, p.sLen)


def _oaep(m):
    p = _struct(m, "CK_RSA_PKCS_OAEP_PARAMS")
    return P.OaepParams(p.hashAlg, p.mgf, p.source, _param_bytes(p.pSourceData, p.ulSourceDataLen))


def _ecdh1(m):
    p = _struct(m, "CK_ECDH1_DERIVE_PARAMS")
    return P.Ecdh1Params(p.kdf, _param_bytes(p.pSharedData, p.ulSharedDataLen),
                         _param_bytes(p.pPublicData, p.ulPublicDataLen))


def _eddsa(m):
    if m.pParameter == NULL:
        return None
    p = _struct(m, "CK_EDDSA_PARAMS")
    return P.EddsaParams(bool(p.phFlag), _param_bytes(p.pContextData, p.ulContextDataLen))


def _key_handle(m):
    return int(_struct(m, "CK_OBJECT_HANDLE"))


def _derive_data(m):
    p = _struct(m, "CK_KEY_DERIVATION_STRING_DATA")
    return _param_bytes(p.pData, p.ulLen)


def _cbc_derive(m):
    if m.ulParameterLen == ffi.sizeof("CK_DES_CBC_ENCRYPT_DATA_PARAMS"):
        p = _struct(m, "CK_DES_CBC_ENCRYPT_DATA_PARAMS")
    else:
        p = _struct(m, "CK_AES_CBC_ENCRYPT_DATA_PARAMS")
    return P.CbcDeriveParams(ffi.buffer(p.iv)[:], _param_bytes(p.pData, p.length))


DECODERS = {
    P.NONE: _optional_bytes,  # the HSM, which knows the mechanism, refuses a stray parameter
    P.BYTES: _bytes, P.OPTIONAL_BYTES: _optional_bytes, P.ULONG: _ulong,
    P.GCM: _gcm, P.CTR: _ctr, P.PSS: _pss, P.OAEP: _oaep, P.ECDH1: _ecdh1, P.EDDSA: _eddsa,
    P.KEY_HANDLE: _key_handle, P.DERIVE_DATA: _derive_data, P.CBC_DERIVE: _cbc_derive,
}


_BARE = {}  # ckm -> Mechanism(ckm, None): named tuples are immutable, so one serves every call


def mechanism_in(pointer):
    require(pointer)
    ckm = pointer.mechanism
    kind = P.KINDS.get(ckm, P.NONE)
    if kind is P.NONE and not pointer.ulParameterLen:
        bare = _BARE.get(ckm)
        if bare is None:
            bare = _BARE[ckm] = P.Mechanism(ckm, None)
        return bare
    return P.Mechanism(ckm, DECODERS[kind](pointer))  # decoders read the fields through the pointer
