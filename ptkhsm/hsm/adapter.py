"""The adapter object: the HSM's own settings, as PTK-C shows them on the Admin Token.

PTK-C keeps the HSM's security flags in "tamperable memory" and shows them as
CKA_SECURITY_MODE of a CKO_ADAPTER object that applications find on the Admin
Token. Ours is a public token object of the Admin Token, stored like any other
(so every process and server of one store sees the same flags), holding:

- CKA_SECURITY_MODE: the security flags (FLAGS below; ctconf -f sets them),
- CKA_FW_VERSION: the emulated firmware version, 3 bytes (major, minor,
  patch); legacy ADH Secure Messaging only while it is older than 5.01.00.

Changing either needs the Admin Token's SO logged in (C_SetAttributeValue on
the object, which is what `ctconf -f` does); with Mode locked set the flags
cannot change until the Admin Token is initialised again, which resets them
(PTK-C's HSM reset). docs/sms.md, "HSM security flags", says what each flag does.
"""

from .. import constants as C
from ..errors import CKRError

DEFAULT_FIRMWARE = (5, 10, 0)
LABEL = b"Adapter"

# ctconf letter -> (bit, name shown by ctconf, what it does here). PTK-C's vendor values.
FLAGS = {
    "e": (0x1, "Entrust Ready", "stored and shown; no effect"),
    "n": (C.CKF_NO_CLEAR_PINS, "No clear PINs", "SMS: session requests carrying a PIN or secret are encrypted"),
    "u": (C.CKF_AUTH_PROTECTION, "Auth protection", "SMS: every session request is signed"),
    "c": (C.CKF_NO_PUBLIC_CRYPTO, "No public crypto", "cryptographic operations need a logged-in user"),
    "t": (0x10, "Tamper before upgrade", "stored and shown; no effect"),
    "i": (0x20, "Increased security", "stored and shown; no effect"),
    "a": (C.CKF_FIPS_ALGORITHMS, "Only FIPS algorithms", "stored and shown; no effect"),
    "N": (C.CKF_FULL_SMS_ENC, "Full secure message encryption", "SMS: every session request and reply encrypted"),
    "U": (C.CKF_FULL_SMS_SIGN, "Full secure message signing", "SMS: every session request and reply signed"),
    "p": (C.CKF_PURE_P11, "Pure PKCS11", "stored and shown; no effect"),
    "d": (0x400, "DES even parity allowed", "stored and shown; no effect"),
    "E": (0x800, "User specified ECC domain parameters allowed", "stored and shown; no effect"),
    "w": (0x2000, "Weak PKCS11 mechanisms", "stored and shown; no effect (weak mechanisms stay usable)"),
    "b": (0x4000, "PCI audit log", "stored and shown; no effect"),
    "F": (0x8000, "FIPS mode", "stored and shown; no effect"),
    "l": (C.CKF_MODE_LOCKED, "Mode locked", "the flags cannot change until the Admin Token is initialised again"),
}
ALL_FLAGS = 0
for _bit, _, _ in FLAGS.values():
    ALL_FLAGS |= _bit


def parse_letters(text):
    """ctconf -f's argument -> flag bits; "0" clears them all."""
    if text == "0":
        return 0
    bits = 0
    for letter in text:
        if letter not in FLAGS:
            raise ValueError(f"unknown security flag letter {letter!r} (use {''.join(FLAGS)} or 0)")
        bits |= FLAGS[letter][0]
    return bits


def describe(bits):
    """Flag bits -> the 'Security Mode' text ctconf prints."""
    if not bits:
        return "Default (No flags set)"
    return ", ".join(name for bit, name, _ in FLAGS.values() if bits & bit)


def firmware_text(version):
    return "%d.%02d.%02d" % tuple(version)


def parse_firmware(text):
    """'5.00.00' or '5.0.0' -> (5, 0, 0)."""
    try:
        parts = tuple(int(p) for p in text.split("."))
    except ValueError:
        raise ValueError(f"firmware version {text!r}: use major.minor.patch, e.g. 5.00.00") from None
    if len(parts) != 3 or not all(0 <= p < 256 for p in parts):
        raise ValueError(f"firmware version {text!r}: use major.minor.patch, each 0..255")
    return parts


def _attrs(flags=0, firmware=DEFAULT_FIRMWARE):
    return {C.CKA_CLASS: C.CKO_ADAPTER, C.CKA_TOKEN: True, C.CKA_PRIVATE: False, C.CKA_MODIFIABLE: True, C.CKA_DESTROYABLE: False,
            C.CKA_COPYABLE: False,
            C.CKA_LABEL: LABEL, C.CKA_SECURITY_MODE: flags, C.CKA_FW_VERSION: bytes(firmware)}


def find(token):
    """The adapter object of the Admin Token (made with defaults when missing: a new store,
    or an Admin Token just initialised again)."""
    token.ensure_loaded()
    found = [o for o in token.objects.values() if o.attrs.get(C.CKA_CLASS) == C.CKO_ADAPTER]
    if found:
        return min(found, key=lambda o: o.handle)  # two processes racing on a new store: the first
    return token.store_new([_attrs()])[0]


def reset(token, firmware):
    """After the Admin Token is initialised again: no flags, the same firmware version."""
    token.store_new([_attrs(0, firmware)])


def settings(token):
    """-> (security flags, firmware version) as stored."""
    obj = find(token)
    return obj.attrs[C.CKA_SECURITY_MODE], tuple(obj.attrs[C.CKA_FW_VERSION])


def change(token, obj, changes, is_so):
    """C_SetAttributeValue on the adapter object: the Admin SO changes the HSM's settings."""
    if not is_so:
        raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "the HSM's settings need the Admin Token's SO logged in")
    attrs = dict(obj.attrs)
    for attr_type, value in changes.items():
        if attr_type == C.CKA_SECURITY_MODE:
            if value & ~ALL_FLAGS:
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"unknown security flag bits {value & ~ALL_FLAGS:#x}")
        elif attr_type == C.CKA_FW_VERSION:
            if len(value) != 3:
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_FW_VERSION: 3 bytes (major, minor, patch)")
            value = bytes(value)
        elif attrs.get(attr_type) != value:
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"attribute {attr_type:#x} of the adapter cannot change")
        if attrs[C.CKA_SECURITY_MODE] & C.CKF_MODE_LOCKED and attrs.get(attr_type) != value:
            raise CKRError(C.CKR_ACCESS_DENIED, "the security mode is locked (Mode locked): initialise "
                                                "the Admin Token again to change it")
        attrs[attr_type] = value
    token.store_update(obj, attrs)


def is_adapter(obj):
    return obj.attrs.get(C.CKA_CLASS) == C.CKO_ADAPTER

