"""What a message must carry: the HSM's security flags OR'ed with the client's SMPR.

The seed's table, one row per flag, in the direction it names:

| HSM flag / SMPR letter       | requests (to the HSM)          | replies (from the HSM) |
|------------------------------|--------------------------------|------------------------|
| No clear PINs / E            | encrypted if sensitive         |                        |
| Auth protection / S          | signed                         |                        |
| Auth replies / R (SMPR only) |                                | signed                 |
| Full SMS encryption          | encrypted                      | encrypted              |
| Full SMS signing             | signed                         | signed                 |

Only calls that take a session handle are protected (the seed's "Session
protection is only applied to Cryptoki functions that use a session
handle"). Encryption always comes with a MAC (channel.Channel.seal).
"""

from .. import constants as C
from ..errors import CKRError, ConfigError
from .channel import ENCRYPTED, SIGNED

SMPR_LETTERS = {"E": C.CKF_NO_CLEAR_PINS, "S": C.CKF_AUTH_PROTECTION, "R": None}
AUTH_REPLIES = 0x1_0000_0000  # the SMPR's R: a client-side bit, no HSM flag has it
SMS_FLAGS = C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN


def parse_smpr(name, text):
    """`ET_PTKC_<serial>_SMPR`: letters E, S, R -> flag bits."""
    bits = 0
    for letter in text.strip().upper():
        if letter not in SMPR_LETTERS:
            raise ConfigError(f"{name}={text!r}: unknown letter {letter!r} (use E, S, R)")
        bits |= SMPR_LETTERS[letter] or AUTH_REPLIES
    return bits


def wanted(flags):
    """Does this flag set ask for a channel at all?"""
    return bool(flags & (SMS_FLAGS | AUTH_REPLIES))


def protection(flags, takes_session, sensitive):
    """-> (request protection, reply protection) for one call under `flags`
    (the HSM's CKA_SECURITY_MODE OR'ed with the SMPR bits)."""
    if not takes_session:
        return 0, 0
    request = reply = 0
    if flags & C.CKF_FULL_SMS_ENC or (sensitive and flags & C.CKF_NO_CLEAR_PINS):
        request |= ENCRYPTED
    if flags & C.CKF_FULL_SMS_ENC:
        reply |= ENCRYPTED
    if flags & (C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_SIGN):
        request |= SIGNED
    if flags & (AUTH_REPLIES | C.CKF_FULL_SMS_SIGN):
        reply |= SIGNED
    return request, reply


def check_request(flags, takes_session, sensitive, got):
    """The HSM's side: a request under less protection than its own flags require is
    refused (the client's SMPR can only add)."""
    need, _ = protection(flags & SMS_FLAGS, takes_session, sensitive)
    missing = need & ~got
    if missing:
        what = " and ".join(n for bit, n in ((ENCRYPTED, "encrypted"), (SIGNED, "signed")) if missing & bit)
        raise CKRError(C.CKR_BAD_PROTECTION, f"SMS: this HSM requires {what} requests for this call")
