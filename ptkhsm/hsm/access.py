"""Who may do what: the session/login access table of PKCS#11 (v2.40 §5.2, §4.4).

                        | R/O public | R/W public | R/O user | R/W user | R/W SO
  public session object |    r/w     |    r/w     |   r/w    |   r/w    |  r/w
  private session object|     -      |     -      |   r/w    |   r/w    |   -
  public token object   |    r/o     |    r/w     |   r/o    |   r/w    |  r/w
  private token object  |     -      |     -      |   r/o    |   r/w    |   -

"-" means the object is invisible (CKR_OBJECT_HANDLE_INVALID on access);
writing where only "r/o" is allowed is CKR_SESSION_READ_ONLY; creating a
private object without the user logged in is CKR_USER_NOT_LOGGED_IN.

Sessions: no read-only session while the SO is logged in
(CKR_SESSION_READ_WRITE_SO_EXISTS), and an uninitialised token takes
read-only sessions only (CKR_TOKEN_WRITE_PROTECTED for a read/write one:
nothing but C_InitToken writes to it). The SO and the user log in only where
the table lets them.
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


def check_open(token, rw):
    """C_OpenSession on this token."""
    if not rw and token.login == C.CKU_SO:
        raise CKRError(C.CKR_SESSION_READ_WRITE_SO_EXISTS, "the SO is logged in")
    if rw and not token.initialized:
        raise CKRError(C.CKR_TOKEN_WRITE_PROTECTED, f"token in slot {token.slot_id} is not initialised: "
                                                    "read-only sessions only")


def check_init_token(sessions):
    """C_InitToken: no session of the token may be open."""
    if sessions:
        raise CKRError(C.CKR_SESSION_EXISTS, "close the token's sessions first")


def check_so_login(sessions):
    """C_Login as the SO: only when no read-only session of the token is open."""
    if any(not s.rw for s in sessions):
        raise CKRError(C.CKR_SESSION_READ_ONLY_EXISTS, "close read-only sessions first")


def check_init_pin(session, token):
    if token.login != C.CKU_SO:
        raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "C_InitPIN needs the SO logged in")
    if not session.rw:
        raise CKRError(C.CKR_SESSION_READ_ONLY, "C_InitPIN needs a read/write session")


def check_set_pin(session):
    if not session.rw:
        raise CKRError(C.CKR_SESSION_READ_ONLY, "C_SetPIN needs a read/write session")


def check_context_login(token):
    """C_Login(CKU_CONTEXT_SPECIFIC): re-authenticating the user needs the user logged in."""
    if token.login != C.CKU_USER:
        raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "context-specific login needs the user")


def check_logout(token):
    if token.login is None:
        raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "nobody is logged in")


def is_so(token):
    """The SO is logged in: what policy.check_so_only needs (CKA_TRUSTED)."""
    return token.login == C.CKU_SO


def session_state(session, token):
    if token.login == C.CKU_SO:
        return C.CKS_RW_SO_FUNCTIONS
    if token.login == C.CKU_USER:
        return C.CKS_RW_USER_FUNCTIONS if session.rw else C.CKS_RO_USER_FUNCTIONS
    return C.CKS_RW_PUBLIC_SESSION if session.rw else C.CKS_RO_PUBLIC_SESSION
