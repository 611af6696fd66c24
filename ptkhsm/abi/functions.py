"""The PKCS#11 functions as the C caller sees them.

Each is a thin shell: check pointers, convert arguments, call the client's
`api`, convert results, return its CK_RV (OK, or the per-attribute verdict of
C_GetAttributeValue). Every failure is an exception; `export` attaches the
function to its `extern "Python"` entry with `_failed`, the one place where
exceptions become CK_RV. (cffi calls `_failed` with the exception and returns
what it returns: no wrapper frame on the path of every call.)
"""

import logging
import threading

from _ptkhsm_shim import ffi, lib

from .. import __version__
from .. import constants as C
from ..errors import CKRError
from ..log import logger
from . import marshal as M
from .marshal import NULL, require

OK = C.CKR_OK
IMPLEMENTED = set()
_state = {"library": None}
_life = threading.Lock()  # C_Initialize / C_Finalize race from many threads (python-pkcs11 passes NULL)
# A library inherited through fork() is never closed in the child: its sqlite
# connection belongs to the parent's file locks.
_forsaken = []
_DEBUG = logger.isEnabledFor(logging.DEBUG)


def export(fn):
    ffi.def_extern(name=f"ptk_{fn.__name__}", error=C.CKR_GENERAL_ERROR, onerror=_failed)(fn)
    IMPLEMENTED.add(fn.__name__)
    return fn


def _failed(exc_type, exc, traceback):
    """The CK_RV for an exception raised by an exported function."""
    if isinstance(exc, CKRError):
        if _DEBUG:
            logger.debug("%s: %s", traceback.tb_frame.f_code.co_name if traceback else "?", exc)
        return exc.rv
    if isinstance(exc, MemoryError):
        return C.CKR_HOST_MEMORY
    # A bug (or a function that forgot its return value, which cffi reports as a TypeError).
    logger.error("ptkhsm internal error", exc_info=(exc_type, exc, traceback))
    return C.CKR_GENERAL_ERROR


def api():
    """The client's api, or CKR_CRYPTOKI_NOT_INITIALIZED. (A fork()ed child is turned
    away in C until it calls C_Initialize.)"""
    library = _state["library"]
    if library is None:
        raise CKRError(C.CKR_CRYPTOKI_NOT_INITIALIZED, "call C_Initialize first")
    return library.api


# -- general purpose ---------------------------------------------------------------
@export
def C_Initialize(pInitArgs):
    from ..cryptoki.client import Cryptoki
    from ..errors import ConfigError
    from ..exttoken import stack

    if pInitArgs != NULL:
        args = ffi.cast("CK_C_INITIALIZE_ARGS *", pInitArgs)[0]
        if args.pReserved != NULL:
            raise CKRError(C.CKR_ARGUMENTS_BAD, "pReserved must be NULL")
        given = [p != NULL for p in (args.CreateMutex, args.DestroyMutex, args.LockMutex, args.UnlockMutex)]
        if any(given) and not all(given):
            raise CKRError(C.CKR_ARGUMENTS_BAD, "give all four mutex functions or none")
    with _life:
        library = _state["library"]
        if library is not None and not lib.ptkhsm_fork_pending():
            raise CKRError(C.CKR_CRYPTOKI_ALREADY_INITIALIZED, "already initialised")
        if library is not None:
            _forsaken.append(library)
            _state["library"] = None
        lib.ptkhsm_fork_handled()
        try:
            _state["library"] = stack(Cryptoki())
        except ConfigError as exc:
            logger.error("configuration: %s", exc)
            raise CKRError(C.CKR_GENERAL_ERROR, str(exc)) from None
        except CKRError as exc:
            # e.g. the store refused (docs/security.md); C_Initialize's codes have no device error
            logger.error("cannot start the HSM: %s", exc)
            raise CKRError(C.CKR_GENERAL_ERROR, str(exc)) from None
    return OK


@export
def C_Finalize(pReserved):
    if pReserved != NULL:
        api()
        raise CKRError(C.CKR_ARGUMENTS_BAD, "pReserved must be NULL")
    with _life:
        api()
        library = _state["library"]
        _state["library"] = None
    library.finalize()
    return OK


@export
def C_GetInfo(pInfo):
    api()
    require(pInfo)
    info = pInfo[0]
    M.version(info.cryptokiVersion, (3, 0))
    M.padded(info.manufacturerID, b"ptkhsm project".ljust(32))
    info.flags = 0
    M.padded(info.libraryDescription, b"ptkhsm PKCS#11 module".ljust(32))
    major, minor = (int(x) for x in __version__.split(".")[:2])
    M.version(info.libraryVersion, (major, minor))
    return OK


# -- slots and tokens ----------------------------------------------------------------
@export
def C_GetSlotList(tokenPresent, pSlotList, pulCount):
    slots = api().slot_list()
    M.ulongs_out(slots, pSlotList, pulCount)
    return OK


@export
def C_GetSlotInfo(slotID, pInfo):
    found = api().slot_info(slotID)
    require(pInfo)
    info = pInfo[0]
    M.padded(info.slotDescription, found["description"])
    M.padded(info.manufacturerID, found["manufacturer"])
    info.flags = found["flags"]
    M.version(info.hardwareVersion, found["hardware"])
    M.version(info.firmwareVersion, found["firmware"])
    return OK


@export
def C_GetTokenInfo(slotID, pInfo):
    found = api().token_info(slotID)
    require(pInfo)
    info = pInfo[0]
    for field, key in (("label", "label"), ("manufacturerID", "manufacturer"), ("model", "model"),
                       ("serialNumber", "serial"), ("utcTime", "utc_time")):
        M.padded(getattr(info, field), found[key])
    info.flags = found["flags"]
    info.ulMaxSessionCount = found["max_sessions"]
    info.ulSessionCount = found["sessions"]
    info.ulMaxRwSessionCount = found["max_rw_sessions"]
    info.ulRwSessionCount = found["rw_sessions"]
    info.ulMaxPinLen = found["max_pin"]
    info.ulMinPinLen = found["min_pin"]
    info.ulTotalPublicMemory = found["total_public_memory"]
    info.ulFreePublicMemory = found["free_public_memory"]
    info.ulTotalPrivateMemory = found["total_private_memory"]
    info.ulFreePrivateMemory = found["free_private_memory"]
    M.version(info.hardwareVersion, found["hardware"])
    M.version(info.firmwareVersion, found["firmware"])
    return OK


@export
def C_GetMechanismList(slotID, pMechanismList, pulCount):
    M.ulongs_out(api().mechanism_list(slotID), pMechanismList, pulCount)
    return OK


@export
def C_GetMechanismInfo(slotID, type, pInfo):
    low, high, flags = api().mechanism_info(slotID, type)
    require(pInfo)
    pInfo.ulMinKeySize, pInfo.ulMaxKeySize, pInfo.flags = low, high, flags
    return OK


@export
def C_InitToken(slotID, pPin, ulPinLen, pLabel):
    hsm = api()
    require(pLabel)
    hsm.init_token(slotID, M.pin_in(pPin, ulPinLen), ffi.buffer(pLabel, 32)[:])
    return OK


@export
def C_InitPIN(hSession, pPin, ulPinLen):
    api().init_pin(hSession, M.pin_in(pPin, ulPinLen))
    return OK


@export
def C_SetPIN(hSession, pOldPin, ulOldLen, pNewPin, ulNewLen):
    api().set_pin(hSession, M.pin_in(pOldPin, ulOldLen), M.pin_in(pNewPin, ulNewLen))
    return OK


@export
def C_WaitForSlotEvent(flags, pSlot, pReserved):
    api()
    if flags & C.CKF_DONT_BLOCK:
        raise CKRError(C.CKR_NO_EVENT, "slots and tokens never change")
    raise CKRError(C.CKR_FUNCTION_NOT_SUPPORTED, "blocking wait for an event that never comes")


# -- sessions ------------------------------------------------------------------------------
@export
def C_OpenSession(slotID, flags, pApplication, Notify, phSession):
    hsm = api()
    require(phSession)
    phSession[0] = hsm.open_session(slotID, flags)
    return OK


@export
def C_CloseSession(hSession):
    api().close_session(hSession)
    return OK


@export
def C_CloseAllSessions(slotID):
    api().close_all_sessions(slotID)
    return OK


@export
def C_GetSessionInfo(hSession, pInfo):
    slot_id, state, flags = api().session_info(hSession)
    require(pInfo)
    pInfo.slotID, pInfo.state, pInfo.flags, pInfo.ulDeviceError = slot_id, state, flags, 0
    return OK


@export
def C_Login(hSession, userType, pPin, ulPinLen):
    api().login(hSession, userType, M.pin_in(pPin, ulPinLen))
    return OK


@export
def C_LoginUser(hSession, userType, pPin, ulPinLen, pUsername, ulUsernameLen):
    # No named users on this token: the user name is ignored, as v3.0 §5.6 allows.
    api().login(hSession, userType, M.pin_in(pPin, ulPinLen))
    return OK


@export
def C_Logout(hSession):
    api().logout(hSession)
    return OK


@export
def C_SessionCancel(hSession, flags):
    api().cancel(hSession, flags)
    return OK


# -- objects -------------------------------------------------------------------------------
@export
def C_CreateObject(hSession, pTemplate, ulCount, phObject):
    hsm = api()
    require(phObject)
    phObject[0] = hsm.create_object(hSession, M.template_in(pTemplate, ulCount))
    return OK


@export
def C_CopyObject(hSession, hObject, pTemplate, ulCount, phNewObject):
    hsm = api()
    require(phNewObject)
    phNewObject[0] = hsm.copy_object(hSession, hObject, M.template_in(pTemplate, ulCount))
    return OK


@export
def C_DestroyObject(hSession, hObject):
    api().destroy_object(hSession, hObject)
    return OK


@export
def C_GetObjectSize(hSession, hObject, pulSize):
    hsm = api()
    require(pulSize)
    pulSize[0] = hsm.object_size(hSession, hObject)
    return OK


@export
def C_GetAttributeValue(hSession, hObject, pTemplate, ulCount):
    hsm = api()
    types = [pTemplate[i].type for i in range(M.template_count(pTemplate, ulCount))]
    # Per-attribute failures (sensitive, unknown, too small) still fill the others: not an exception.
    return M.attributes_out(pTemplate, types, hsm.get_attributes(hSession, hObject, types))


@export
def C_SetAttributeValue(hSession, hObject, pTemplate, ulCount):
    hsm = api()
    hsm.set_attributes(hSession, hObject, M.template_in(pTemplate, ulCount))
    return OK


@export
def C_FindObjectsInit(hSession, pTemplate, ulCount):
    hsm = api()
    hsm.find_init(hSession, M.template_in(pTemplate, ulCount))
    return OK


@export
def C_FindObjects(hSession, phObject, ulMaxObjectCount, pulObjectCount):
    hsm = api()
    require(phObject, pulObjectCount)
    found = hsm.find(hSession, ulMaxObjectCount)
    for i, handle in enumerate(found):
        phObject[i] = handle
    pulObjectCount[0] = len(found)
    return OK


@export
def C_FindObjectsFinal(hSession):
    api().find_final(hSession)
    return OK


# -- encryption, decryption, digests, signatures ----------------------------------------
# A call of an active operation that fails, other than with CKR_BUFFER_TOO_SMALL or as a
# length query, ends the operation (PKCS#11 v3.0 §5.2). Failures below the api end it
# there; the pointer checks made here, before the api sees the call, end it through the
# api's cancel (C_SessionCancel's path), so every transport below behaves the same.
# (Plain try blocks, not a helper or a context manager: this runs on every operation call.)

# The shapes shared by the operation functions; `start`/`step`/`finish` are methods of the api.
def _init(start, hSession, pMechanism, hKey):
    start(hSession, M.mechanism_in(pMechanism), hKey)


def _run(hsm, step, flag, hSession, pData, ulDataLen, pOut, pulOutLen):
    try:
        room = M.out_size(pOut, pulOutLen)
        data = M.data_in(pData, ulDataLen)
    except CKRError:
        hsm.cancel(hSession, flag)
        raise
    M.deliver(step(hSession, data, room), pOut, pulOutLen, room)


def _final(hsm, finish, flag, hSession, pOut, pulOutLen):
    try:
        room = M.out_size(pOut, pulOutLen)
    except CKRError:
        hsm.cancel(hSession, flag)
        raise
    M.deliver(finish(hSession, room), pOut, pulOutLen, room)


def _feed(hsm, step, flag, hSession, pData, ulDataLen):
    """An operation step that takes bytes and gives nothing back (updates, C_VerifyFinal)."""
    try:
        data = M.data_in(pData, ulDataLen)
    except CKRError:
        hsm.cancel(hSession, flag)
        raise
    step(hSession, data)


@export
def C_EncryptInit(hSession, pMechanism, hKey):
    _init(api().encrypt_init, hSession, pMechanism, hKey)
    return OK


@export
def C_Encrypt(hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen):
    hsm = api()
    _run(hsm, hsm.encrypt, C.CKF_ENCRYPT, hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen)
    return OK


@export
def C_EncryptUpdate(hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen):
    hsm = api()
    _run(hsm, hsm.encrypt_update, C.CKF_ENCRYPT, hSession, pPart, ulPartLen, pEncryptedPart,
         pulEncryptedPartLen)
    return OK


@export
def C_EncryptFinal(hSession, pLastEncryptedPart, pulLastEncryptedPartLen):
    hsm = api()
    _final(hsm, hsm.encrypt_final, C.CKF_ENCRYPT, hSession, pLastEncryptedPart, pulLastEncryptedPartLen)
    return OK


@export
def C_DecryptInit(hSession, pMechanism, hKey):
    _init(api().decrypt_init, hSession, pMechanism, hKey)
    return OK


@export
def C_Decrypt(hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen):
    hsm = api()
    _run(hsm, hsm.decrypt, C.CKF_DECRYPT, hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen)
    return OK


@export
def C_DecryptUpdate(hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen):
    hsm = api()
    _run(hsm, hsm.decrypt_update, C.CKF_DECRYPT, hSession, pEncryptedPart, ulEncryptedPartLen, pPart,
         pulPartLen)
    return OK


@export
def C_DecryptFinal(hSession, pLastPart, pulLastPartLen):
    hsm = api()
    _final(hsm, hsm.decrypt_final, C.CKF_DECRYPT, hSession, pLastPart, pulLastPartLen)
    return OK


@export
def C_DigestInit(hSession, pMechanism):
    api().digest_init(hSession, M.mechanism_in(pMechanism))
    return OK


@export
def C_Digest(hSession, pData, ulDataLen, pDigest, pulDigestLen):
    hsm = api()
    _run(hsm, hsm.digest, C.CKF_DIGEST, hSession, pData, ulDataLen, pDigest, pulDigestLen)
    return OK


@export
def C_DigestUpdate(hSession, pPart, ulPartLen):
    hsm = api()
    _feed(hsm, hsm.digest_update, C.CKF_DIGEST, hSession, pPart, ulPartLen)
    return OK


@export
def C_DigestKey(hSession, hKey):
    api().digest_key(hSession, hKey)
    return OK


@export
def C_DigestFinal(hSession, pDigest, pulDigestLen):
    hsm = api()
    _final(hsm, hsm.digest_final, C.CKF_DIGEST, hSession, pDigest, pulDigestLen)
    return OK


@export
def C_SignInit(hSession, pMechanism, hKey):
    _init(api().sign_init, hSession, pMechanism, hKey)
    return OK


@export
def C_Sign(hSession, pData, ulDataLen, pSignature, pulSignatureLen):
    hsm = api()
    _run(hsm, hsm.sign, C.CKF_SIGN, hSession, pData, ulDataLen, pSignature, pulSignatureLen)
    return OK


@export
def C_SignUpdate(hSession, pPart, ulPartLen):
    hsm = api()
    _feed(hsm, hsm.sign_update, C.CKF_SIGN, hSession, pPart, ulPartLen)
    return OK


@export
def C_SignFinal(hSession, pSignature, pulSignatureLen):
    hsm = api()
    _final(hsm, hsm.sign_final, C.CKF_SIGN, hSession, pSignature, pulSignatureLen)
    return OK


@export
def C_VerifyInit(hSession, pMechanism, hKey):
    _init(api().verify_init, hSession, pMechanism, hKey)
    return OK


@export
def C_Verify(hSession, pData, ulDataLen, pSignature, ulSignatureLen):
    hsm = api()
    try:
        data, signature = M.data_in(pData, ulDataLen), M.data_in(pSignature, ulSignatureLen)
    except CKRError:
        hsm.cancel(hSession, C.CKF_VERIFY)
        raise
    hsm.verify(hSession, data, signature)
    return OK


@export
def C_VerifyUpdate(hSession, pPart, ulPartLen):
    hsm = api()
    _feed(hsm, hsm.verify_update, C.CKF_VERIFY, hSession, pPart, ulPartLen)
    return OK


@export
def C_VerifyFinal(hSession, pSignature, ulSignatureLen):
    hsm = api()
    _feed(hsm, hsm.verify_final, C.CKF_VERIFY, hSession, pSignature, ulSignatureLen)
    return OK


# -- keys and random numbers ---------------------------------------------------------------
@export
def C_GenerateKey(hSession, pMechanism, pTemplate, ulCount, phKey):
    hsm = api()
    require(phKey)
    phKey[0] = hsm.generate_key(hSession, M.mechanism_in(pMechanism), M.template_in(pTemplate, ulCount))
    return OK


@export
def C_GenerateKeyPair(hSession, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount,
                      pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey):
    hsm = api()
    require(phPublicKey, phPrivateKey)
    phPublicKey[0], phPrivateKey[0] = hsm.generate_key_pair(
        hSession, M.mechanism_in(pMechanism),
        M.template_in(pPublicKeyTemplate, ulPublicKeyAttributeCount),
        M.template_in(pPrivateKeyTemplate, ulPrivateKeyAttributeCount))
    return OK


@export
def C_WrapKey(hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen):
    hsm = api()
    room = M.out_size(pWrappedKey, pulWrappedKeyLen)
    wrapped = hsm.wrap_key(hSession, M.mechanism_in(pMechanism), hWrappingKey, hKey)
    M.deliver(wrapped, pWrappedKey, pulWrappedKeyLen, room)
    return OK


@export
def C_UnwrapKey(hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate,
                ulAttributeCount, phKey):
    hsm = api()
    require(phKey)
    phKey[0] = hsm.unwrap_key(hSession, M.mechanism_in(pMechanism), hUnwrappingKey,
                              M.data_in(pWrappedKey, ulWrappedKeyLen),
                              M.template_in(pTemplate, ulAttributeCount))
    return OK


@export
def C_DeriveKey(hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey):
    hsm = api()
    require(phKey)
    phKey[0] = hsm.derive_key(hSession, M.mechanism_in(pMechanism), hBaseKey,
                              M.template_in(pTemplate, ulAttributeCount))
    return OK


@export
def C_SeedRandom(hSession, pSeed, ulSeedLen):
    hsm = api()
    hsm.seed_random(hSession, M.data_in(pSeed, ulSeedLen))
    return OK


@export
def C_GenerateRandom(hSession, RandomData, ulRandomLen):
    hsm = api()
    if ulRandomLen:
        require(RandomData)
    ffi.memmove(RandomData, hsm.generate_random(hSession, M.buffer_length(ulRandomLen)), ulRandomLen)
    return OK


# -- functions this module does not implement ----------------------------------------
def _session_then(rv, why):
    def fn(hSession, *args):
        api().session_info(hSession)
        raise CKRError(rv, why)
    return fn


_LEGACY = ("C_GetFunctionStatus", "C_CancelFunction")
_UNSUPPORTED = (  # listed in docs/functions.md, which tests/test_docs.py checks
    "C_GetOperationState", "C_SetOperationState", "C_SignRecoverInit", "C_SignRecover",
    "C_VerifyRecoverInit", "C_VerifyRecover", "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate", "C_DecryptVerifyUpdate",
    "C_MessageEncryptInit", "C_EncryptMessage", "C_EncryptMessageBegin", "C_EncryptMessageNext",
    "C_MessageEncryptFinal", "C_MessageDecryptInit", "C_DecryptMessage", "C_DecryptMessageBegin",
    "C_DecryptMessageNext", "C_MessageDecryptFinal", "C_MessageSignInit", "C_SignMessage",
    "C_SignMessageBegin", "C_SignMessageNext", "C_MessageSignFinal", "C_MessageVerifyInit",
    "C_VerifyMessage", "C_VerifyMessageBegin", "C_VerifyMessageNext", "C_MessageVerifyFinal",
)
for _name in _LEGACY:
    _fn = _session_then(C.CKR_FUNCTION_NOT_PARALLEL, "no parallel functions (legacy)")
    _fn.__name__ = _name
    export(_fn)
for _name in _UNSUPPORTED:
    _fn = _session_then(C.CKR_FUNCTION_NOT_SUPPORTED, f"{_name} is not implemented")
    _fn.__name__ = _name
    export(_fn)
