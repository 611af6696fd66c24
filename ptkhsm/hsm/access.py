"""Who may do what: the session/login access table of PKCS#11 (v2.40 §5.2, §4.4).

                        | R/O public | R/W public | R/O user | R/W user | R/W SO
  public session object |    r/w     |    r/w     |   r/w    |   r/w    |  r/w
  private session object|     -      |     -      |   r/w    |   r/w    |   -
  public token object   |    r/o     |    r/w     |   r/o    |   r/w    |  r/w
  private token object  |     -      |     -      |   r/o    |   r/w    |   -

"-" means the object is invisible (CKR_OBJECT_HANDLE_INVALID on access);
writing where only "r/o" is allowed is CKR_SESSION_READ_ONLY; creating a
private object without the user logged in is CKR_USER_NOT_LOGGED_IN.
Every check of this kind in the HSM goes through these functions.
"""

from .. import constants as C
from ..errors import CKRError


def can_see(token, obj):
    return not obj.is_private or token.login == C.CKU_USER


def check_write(session, token, is_token_object, is_private):
    """Creating, changing or destroying an object with these properties."""
    if is_private and token.login != C.CKU_USER:
        raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "private objects need the user logged in")
    if is_token_object and not session.rw:
        raise CKRError(C.CKR_SESSION_READ_ONLY, "token objects need a read/write session")


def check_crypto(token, key):
    """Using a key (CKA_PRIVATE keys are invisible without the user)."""
    if not can_see(token, key):
        raise CKRError(C.CKR_KEY_HANDLE_INVALID, "private key and the user is not logged in")


def session_state(session, token):
    if token.login == C.CKU_SO:
        return C.CKS_RW_SO_FUNCTIONS
    if token.login == C.CKU_USER:
        return C.CKS_RW_USER_FUNCTIONS if session.rw else C.CKS_RO_USER_FUNCTIONS
    return C.CKS_RW_PUBLIC_SESSION if session.rw else C.CKS_RO_PUBLIC_SESSION
