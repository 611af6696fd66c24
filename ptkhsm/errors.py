"""Errors raised anywhere below the ABI; `ptkhsm.abi` turns them into CK_RV once."""

from . import constants


class CKRError(Exception):
    """A PKCS#11 failure: `rv` is the code the caller gets, the text says why (never secrets)."""

    def __init__(self, rv, reason=""):
        super().__init__(reason)
        self.rv = rv

    def __str__(self):
        try:
            name = constants.CKR(self.rv).name
        except ValueError:
            name = hex(self.rv)
        reason = super().__str__()
        return f"{name}: {reason}" if reason else name


class BufferTooSmall(CKRError):
    """The output does not fit: carries the size the caller must allocate."""

    def __init__(self, needed):
        super().__init__(constants.CKR_BUFFER_TOO_SMALL, f"{needed} bytes needed")
        self.needed = needed


class ConfigError(Exception):
    """A configuration item has a malformed value; the message names the item."""
