"""Objects held by the HSM and the handle space they live in."""

import itertools

from .. import constants as C


class Obj:
    """One object. `cache` holds derived values (parsed crypto keys) and is
    dropped whenever the attributes change."""

    __slots__ = ("handle", "attrs", "slot", "session", "uid", "cache")

    def __init__(self, handle, attrs, slot, session=None, uid=None):
        self.handle = handle
        self.attrs = attrs
        self.slot = slot
        self.session = session  # owning session handle, for session objects
        self.uid = uid          # store row, for token objects
        self.cache = {}

    @property
    def is_token(self):
        return self.attrs.get(C.CKA_TOKEN, False)

    @property
    def is_private(self):
        return self.attrs.get(C.CKA_PRIVATE, False)

    def replace_attrs(self, attrs):
        self.attrs = attrs
        self.cache = {}


class Handles:
    """Object handles: never 0 (CK_INVALID_HANDLE), never reused in a process."""

    def __init__(self):
        self._next = itertools.count(1).__next__

    def new(self):
        return self._next()


def matches(attrs, template):
    """C_FindObjects matching: every template attribute present with an equal value."""
    for attr_type, value in template:
        if attrs.get(attr_type, _MISSING) != value:
            return False
    return True


_MISSING = object()
