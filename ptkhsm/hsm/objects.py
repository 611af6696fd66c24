"""Objects held by the HSM and the handle space they live in."""

import itertools

from .. import constants as C
from ..calls import LAYER_HANDLES, SESSION_HANDLES
from ..errors import CKRError


class Obj:
    """One object. `cache` holds derived values (parsed crypto keys) and is
    dropped whenever the attributes change."""

    __slots__ = ("handle", "attrs", "slot", "session", "uid", "cache", "table")

    def __init__(self, handle, attrs, slot, session=None, uid=None):
        self.handle = handle
        self.attrs = attrs
        self.slot = slot
        self.session = session  # owning session handle, for session objects
        self.uid = uid          # store row, for token objects
        self.cache = {}
        self.table = None       # the ObjectTable indexing it, if any

    @property
    def is_token(self):
        return self.attrs.get(C.CKA_TOKEN, False)

    @property
    def is_private(self):
        return self.attrs.get(C.CKA_PRIVATE, False)

    def replace_attrs(self, attrs):
        old, self.attrs = self.attrs, attrs
        self.cache = {}
        if self.table is not None:
            self.table.reindex(self, old)


# Attributes applications find objects by. Their values are bytes (UTF8/BYTES in the
# schema), so they can key a dict.
INDEXED = (C.CKA_LABEL, C.CKA_ID)


class ObjectTable(dict):
    """handle -> Obj, plus an index on the INDEXED attributes.

    C_FindObjectsInit with a label or an ID then costs the size of the answer,
    not the size of the token (PTK-C's ExtToken finds from its ORT the same
    way). The index follows the table's own mutations (item assignment, del,
    pop, clear: the only ones allowed) and attribute changes, which all go
    through Obj.replace_attrs.
    """

    def __init__(self):
        super().__init__()
        self._index = {attr_type: {} for attr_type in INDEXED}  # type -> value -> {handle: Obj}
        self._order = {}  # handle -> position in the table's iteration order
        self._next = itertools.count().__next__

    def __setitem__(self, handle, obj):
        if handle in self:
            self._remove(self[handle])  # a dict keeps the position of a replaced key
        else:
            self._order[handle] = self._next()
        dict.__setitem__(self, handle, obj)   # not super(): every new object comes here
        obj.table = self
        self._insert(obj, obj.attrs)

    def __delitem__(self, handle):
        self._remove(self[handle])
        del self._order[handle]
        super().__delitem__(handle)

    def pop(self, handle, *default):
        if handle in self:
            self._remove(self[handle])
            del self._order[handle]
        return super().pop(handle, *default)

    def clear(self):
        for obj in self.values():
            obj.table = None
        super().clear()
        self._order.clear()
        for index in self._index.values():
            index.clear()

    def _unsupported(self, *args, **kwargs):
        raise TypeError("ObjectTable changes by item assignment, del, pop and clear only")

    update = setdefault = popitem = __ior__ = _unsupported

    def reindex(self, obj, old_attrs):
        self._drop_from_index(obj, old_attrs)
        self._insert(obj, obj.attrs)

    def candidates(self, template):
        """The objects that can match `template` ((type, value) pairs), in table order:
        one index bucket when the template names an indexed attribute, else all of them."""
        for attr_type, value in template:
            index = self._index.get(attr_type)
            if index is None:
                continue
            try:
                bucket = index.get(value)
            except TypeError:  # an unhashable value: leave the matching to a full scan
                break
            if not bucket:
                return []
            return [bucket[handle] for handle in sorted(bucket, key=self._order.__getitem__)]
        return list(self.values())

    def _insert(self, obj, attrs):
        for attr_type, index in self._index.items():
            value = attrs.get(attr_type, _MISSING)
            if value is not _MISSING:
                bucket = index.get(value)
                if bucket is None:
                    index[value] = {obj.handle: obj}
                else:    # no new dict for setdefault to throw away (most objects share CKA_ID b"")
                    bucket[obj.handle] = obj

    def _remove(self, obj):
        self._drop_from_index(obj, obj.attrs)
        obj.table = None

    def _drop_from_index(self, obj, attrs):
        for attr_type, index in self._index.items():
            value = attrs.get(attr_type, _MISSING)
            bucket = index.get(value) if value is not _MISSING else None
            if bucket is not None:
                bucket.pop(obj.handle, None)
                if not bucket:
                    del index[value]


class Handles:
    """Handles of session objects and sessions: never 0 (CK_INVALID_HANDLE), never
    reused in a process, never a token object's nor a stacked layer's (calls.py)."""

    def __init__(self, start=SESSION_HANDLES):
        self._next = itertools.count(start).__next__

    def new(self):
        handle = self._next()
        if handle >= LAYER_HANDLES:
            raise CKRError(C.CKR_DEVICE_MEMORY, "this process has used every session and object handle")
        return handle


def matches(attrs, template):
    """C_FindObjects matching: every template attribute present with an equal value."""
    for attr_type, value in template:
        if attrs.get(attr_type, _MISSING) != value:
            return False
    return True


_MISSING = object()
