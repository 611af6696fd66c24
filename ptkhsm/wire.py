"""The wire protocol between the client library and `ptkhsm serve` (docs/network.md).

Frames: a 4-byte big-endian length, then that many bytes: one type byte and
its body. Values are tagged (a tag byte, then the value), decoded by a table
of plain readers: nothing on decode runs code of the sender's choosing (no
pickle), every length is checked against what is left of the frame, nesting
is bounded. Requests and replies are checked against the call table
(`ptkhsm.calls`), so a well-formed frame of the wrong shape is refused too.
"""

import struct

from . import mechparams as P
from .calls import BY_ID, BY_NAME, MECHANISM, NONE, OPT_ULONG, OUT, TEMPLATE, ULONG, ULONGS, BYTES, INFO, TUPLE, VALUES
from .errors import CKRError

VERSION = 2  # 2: find_all (docs/network.md)
MAGIC = b"PTKHSM\x00"
MAX_FRAME = 1 << 24  # default limit of one frame (16 MiB), both directions
MAX_DEPTH = 8        # lists in lists (templates in templates) at most this deep
ULONG_MAX = (1 << 64) - 1

# Frame types
HELLO, WELCOME, REQUEST, REPLY, ERROR, REFUSED = 1, 2, 3, 4, 5, 6
SMS = 16  # a Secure Messaging record (ptkhsm/transport/smslink.py, docs/sms.md)

_LEN = struct.Struct(">I")
_REQ = struct.Struct(">IH")       # request id, call id
_HELLO = struct.Struct(">7sHH")    # magic, lowest and highest version spoken
_ERR = struct.Struct(">IQ")        # request id, CK_RV
_REQ_HEAD = struct.Struct(">IBIHBI")  # room for the length, REQUEST, request id, call id, the args' tuple tag and count
_REPLY_HEAD = struct.Struct(">IBI")   # room for the length, REPLY, request id
_REPLY_BYTES = struct.Struct(">IBIBI")  # a whole reply frame's head with a bytes value: ..., T_BYTES, its length
_REPLY_NONE = struct.Struct(">IBIB")    # a whole reply frame of None: ..., T_NONE
_ULONG = struct.Struct(">BBQ")        # an integer of 0..2^64-1 as the encoder writes it: T_INT, 8, its 8 bytes


class ProtocolError(Exception):
    """A frame that does not follow the protocol: the connection is closed."""


# -- values --------------------------------------------------------------------------
T_NONE, T_FALSE, T_TRUE, T_INT, T_NEG, T_BYTES, T_STR, T_LIST, T_TUPLE, T_DICT, T_NAMED, T_ERROR = range(12)
# Mechanism parameter types a value may name, by a fixed number (never by a name the peer picks).
NAMED = (P.Mechanism, P.GcmParams, P.CtrParams, P.PssParams, P.OaepParams, P.Ecdh1Params, P.EddsaParams,
         P.CbcDeriveParams)
_NAMED_ID = {cls: i for i, cls in enumerate(NAMED)}


def encode_value(value, out):
    """Append the tagged encoding of `value` to the bytearray `out`."""
    _encode((value,), out)


# The tag and length byte of an integer of n bytes (n <= 255), by n.
_UINT_HEAD = tuple(bytes((T_INT, n)) for n in range(256))
_NEG_HEAD = tuple(bytes((T_NEG, n)) for n in range(256))


def _encode(values, out):
    """Append the encodings of `values`, one after the other. One loop holds every rule,
    the common kinds first: a request's arguments or a list's items cost no call each."""
    for value in values:
        kind = type(value)
        if value is None:
            out.append(T_NONE)
        elif kind is int:
            if 0 <= value <= ULONG_MAX:  # a CK_ULONG: in 8 bytes, one pack
                out += _ULONG.pack(T_INT, 8, value)
                continue
            magnitude = -value if value < 0 else value
            n = (magnitude.bit_length() + 7) >> 3
            if n > 255:
                raise ValueError("integer too large for the wire")
            out += _NEG_HEAD[n] if value < 0 else _UINT_HEAD[n]
            out += magnitude.to_bytes(n, "big")
        elif kind is bytes or kind is bytearray:
            out.append(T_BYTES)
            out += _LEN.pack(len(value))
            out += value
        elif kind is bool:
            out.append(T_TRUE if value else T_FALSE)
        elif kind is list or kind is tuple:
            out.append(T_LIST if kind is list else T_TUPLE)
            out += _LEN.pack(len(value))
            _encode(value, out)
        elif kind in _NAMED_ID:
            out.append(T_NAMED)
            out.append(_NAMED_ID[kind])
            _encode(value, out)   # its fields
        elif kind is str:
            raw = value.encode()
            out.append(T_STR)
            out += _LEN.pack(len(raw))
            out += raw
        elif kind is dict:
            out.append(T_DICT)
            out += _LEN.pack(len(value))
            for pair in value.items():
                _encode(pair, out)
        elif isinstance(value, CKRError):
            out.append(T_ERROR)
            _encode((value.rv,), out)
        else:
            raise TypeError(f"{kind.__name__} cannot cross the wire")


_SHORT = ProtocolError("value runs past the end of the frame")


def _decode(data, pos, depth):
    """-> (value, position after it). One function with the tags in order of frequency:
    the decoder runs on every call, so it avoids a method call per byte."""
    if depth > MAX_DEPTH:
        raise ProtocolError("values nested too deep")
    end = len(data)
    if pos >= end:
        raise _SHORT
    tag = data[pos]
    pos += 1
    if tag == T_INT or tag == T_NEG:
        if pos >= end:
            raise _SHORT
        n = data[pos]
        stop = pos + 1 + n
        if stop > end:
            raise _SHORT
        magnitude = int.from_bytes(data[pos + 1:stop], "big")
        return (-magnitude if tag == T_NEG else magnitude), stop
    if tag == T_BYTES or tag == T_STR:
        if pos + 4 > end:
            raise _SHORT
        stop = pos + 4 + _LEN.unpack_from(data, pos)[0]
        if stop > end:
            raise _SHORT
        raw = bytes(data[pos + 4:stop])
        if tag == T_BYTES:
            return raw, stop
        try:
            return raw.decode(), stop
        except UnicodeDecodeError:
            raise ProtocolError("a string is not UTF-8") from None
    if tag == T_TUPLE or tag == T_LIST or tag == T_DICT:
        if pos + 4 > end:
            raise _SHORT
        count = _LEN.unpack_from(data, pos)[0]
        pos += 4
        if count > end - pos:  # every item takes at least one byte
            raise ProtocolError(f"count {count} exceeds the frame")
        if tag == T_DICT:
            out = {}
            for _ in range(count):
                key, pos = _decode(data, pos, depth + 1)
                if type(key) not in (str, int):
                    raise ProtocolError("a dict key must be a string or an integer")
                out[key], pos = _decode(data, pos, depth + 1)
            return out, pos
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return (tuple(items) if tag == T_TUPLE else items), pos
    if tag == T_NONE:
        return None, pos
    if tag == T_FALSE:
        return False, pos
    if tag == T_TRUE:
        return True, pos
    if tag == T_NAMED:
        if pos >= end:
            raise _SHORT
        number = data[pos]
        pos += 1
        if number >= len(NAMED):
            raise ProtocolError(f"unknown parameter type {number}")
        cls = NAMED[number]
        fields = []
        for _ in cls._fields:
            field, pos = _decode(data, pos, depth + 1)
            fields.append(field)
        return cls(*fields), pos
    if tag == T_ERROR:
        rv, pos = _decode(data, pos, depth + 1)
        if type(rv) is not int:
            raise ProtocolError("an error value without its code")
        return CKRError(rv, "attribute"), pos
    raise ProtocolError(f"unknown value tag {tag}")


def decode_value(data, start=0):
    value, pos = _decode(data, start, 0)
    if pos != len(data):
        raise ProtocolError("trailing bytes after the value")
    return value


# -- shapes of the call table ----------------------------------------------------------
def _is_ulong(v):
    return type(v) is int and 0 <= v <= ULONG_MAX


def _is_template(v, depth=0):
    if type(v) not in (list, tuple) or depth > MAX_DEPTH:
        return False
    for pair in v:
        if type(pair) is not tuple or len(pair) != 2 or not _is_ulong(pair[0]):
            return False
        value = pair[1]
        if type(value) in (list, tuple):  # a template (CKA_WRAP_TEMPLATE) or a mechanism list
            if not (_is_template(value, depth + 1) or all(_is_ulong(x) for x in value)):
                return False
        elif type(value) not in (bool, int, bytes, str) and value is not None:
            return False
    return True


def _is_param(v):
    if v is None or type(v) in (int, bytes):
        return type(v) is not int or _is_ulong(v)
    if type(v) in _NAMED_ID and type(v) is not P.Mechanism:
        return all(f is None or type(f) in (bool, int, bytes) for f in v)
    return False


SHAPES = {
    ULONG: _is_ulong,
    OPT_ULONG: lambda v: v is None or _is_ulong(v),
    BYTES: lambda v: type(v) is bytes,
    TEMPLATE: _is_template,
    ULONGS: lambda v: type(v) is list and all(_is_ulong(x) for x in v),
    MECHANISM: lambda v: type(v) is P.Mechanism and _is_ulong(v.type) and _is_param(v.param),
    OUT: lambda v: type(v) is bytes or _is_ulong(v),
    INFO: lambda v: type(v) is dict,
    TUPLE: lambda v: type(v) is tuple,
    VALUES: lambda v: type(v) is list,
    NONE: lambda v: v is None,
}


# -- frames ------------------------------------------------------------------------------
def _size(n):
    """A frame's length after its 4-byte header -> n, or ValueError past the limit."""
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes exceeds the limit")
    return n


def frame(kind, body):
    return _LEN.pack(_size(len(body) + 1)) + bytes((kind,)) + body


def frame_length(header, limit=MAX_FRAME):
    """The length announced by the 4-byte header that starts `header` (a frame, or the
    buffer it is read into); refuses the impossible before reading it."""
    (n,) = _LEN.unpack_from(header)
    if n == 0:
        raise ProtocolError("empty frame")
    if n > limit:
        raise ProtocolError(f"frame of {n} bytes exceeds the limit of {limit}")
    return n


def hello(low=VERSION, high=VERSION):
    return frame(HELLO, _HELLO.pack(MAGIC, low, high))


def read_hello(body):
    if len(body) != _HELLO.size:
        raise ProtocolError("malformed hello")
    magic, low, high = _HELLO.unpack(body)
    if magic != MAGIC:
        raise ProtocolError("not a ptkhsm client")
    return low, high


def welcome(version, info):
    out = bytearray(struct.pack(">H", version))
    encode_value(info, out)
    return frame(WELCOME, bytes(out))


def read_welcome(body):
    if len(body) < 2:
        raise ProtocolError("malformed welcome")
    version = struct.unpack(">H", body[:2])[0]
    info = decode_value(body[2:])
    if type(info) is not dict:
        raise ProtocolError("malformed welcome")
    return version, info


def _framed(out):
    """A frame built in place (`out` starts with a 4-byte room for its length) -> bytes:
    one buffer per frame, no copies of the body."""
    _LEN.pack_into(out, 0, _size(len(out) - 4))
    return bytes(out)


def request(request_id, name, args):
    out = bytearray(_REQ_HEAD.pack(0, REQUEST, request_id, BY_NAME[name].id, T_TUPLE, len(args)))
    _encode(args, out)
    return _framed(out)


def read_request(body):
    """-> (request id, Call, args), the args checked against the call's signature."""
    if len(body) < _REQ.size:
        raise ProtocolError("truncated request")
    request_id, call_id = _REQ.unpack_from(body)
    call = BY_ID.get(call_id)
    if call is None:
        raise ProtocolError(f"unknown call {call_id}")
    args = _read_args(body, _LAYOUTS[call_id])
    return request_id, call, _decode_args(body, call) if args is None else args


def _decode_args(body, call):
    """The arguments by the general decoder, checked against the call's signature: the
    rule, which _read_args' fast path must agree with (raises ProtocolError)."""
    args = decode_value(body, _REQ.size)
    if type(args) is not tuple or len(args) != len(call.args):
        raise ProtocolError(f"{call.name}: wrong number of arguments")
    for (arg, kind), value in zip(call.args, args):
        if not SHAPES[kind](value):
            raise ProtocolError(f"{call.name}: {arg} is not a {kind}")
    return args


def _layout(kinds):
    """How _read_args reads a call's arguments: one unpack for the tuple's tag and count and
    the leading ulongs (the encoder writes every ulong in 8 bytes), then the other kinds one
    by one. -> (Struct, the tag bytes it must find, the kinds after the leading ulongs)."""
    lead = 0
    while lead < len(kinds) and kinds[lead] is ULONG:
        lead += 1
    tuple_head, ulong_head = bytes((T_TUPLE,)) + _LEN.pack(len(kinds)), bytes((T_INT, 8))
    if not lead:
        return struct.Struct(">5s"), (tuple_head,), kinds
    # tags and values alternate: the tuple's head with the first ulong's, then each value and
    # the next one's tag
    head = struct.Struct(">7sQ" + "2sQ" * (lead - 1))
    return head, (tuple_head + ulong_head,) + (ulong_head,) * (lead - 1), kinds[lead:]


_LAYOUTS = {call.id: _layout(tuple(kind for _, kind in call.args)) for call in BY_ID.values()}


def _read_args(body, layout):
    """The arguments of a well-formed request, read by their kinds in the call table, or
    None: then the general decoder runs and says what is wrong. Ulongs, optional ulongs and
    bytes (most arguments) are read here, without a function call each; every value taken
    here is one the general decoder and the shape checks would give and accept."""
    head, tags, kinds = layout
    try:
        values = head.unpack_from(body, _REQ.size)
        if values[::2] != tags:
            return None
        pos = _REQ.size + head.size
        end = len(body)
        if not kinds:
            return values[1::2] if pos == end else None
        args = list(values[1::2])
        for kind in kinds:
            tag = body[pos]
            if tag == T_INT and (kind is ULONG or kind is OPT_ULONG):
                n = body[pos + 1]
                stop = pos + 2 + n
                if n > 8 or stop > end:
                    return None
                args.append(int.from_bytes(body[pos + 2:stop], "big"))
            elif tag == T_BYTES and kind is BYTES:
                stop = pos + 5 + _LEN.unpack_from(body, pos + 1)[0]
                if stop > end:
                    return None
                args.append(bytes(body[pos + 5:stop]))
            elif tag == T_NONE and kind is OPT_ULONG:
                stop = pos + 1
                args.append(None)
            elif tag == T_NAMED and kind is MECHANISM and body[pos + 1] == 0 and body[pos + 2] == T_INT \
                    and body[pos + 3] <= 8:
                # a Mechanism(type, param) with a param of None, a ulong (a key handle) or bytes
                stop = pos + 4 + body[pos + 3]
                mechanism = int.from_bytes(body[pos + 4:stop], "big")
                tag = body[stop]
                if tag == T_NONE:
                    param, stop = None, stop + 1
                elif tag == T_INT and body[stop + 1] <= 8:
                    start = stop + 2
                    stop = start + body[stop + 1]
                    param = int.from_bytes(body[start:stop], "big")
                elif tag == T_BYTES:
                    start = stop + 5
                    stop = start + _LEN.unpack_from(body, stop + 1)[0]
                    param = bytes(body[start:stop])
                else:
                    return None
                if stop > end:
                    return None
                args.append(P.Mechanism(mechanism, param))
            else:
                value, stop = _decode(body, pos, 1)
                if not SHAPES[kind](value):
                    return None
                args.append(value)
            pos = stop
    except (IndexError, struct.error, ProtocolError):
        return None
    return tuple(args) if pos == end else None


def reply(request_id, value):
    if type(value) is bytes:   # the commonest reply, an output: one pack and one join
        return _REPLY_BYTES.pack(_size(len(value) + _REPLY_BYTES.size - 4), REPLY, request_id, T_BYTES,
                                 len(value)) + value
    if value is None:
        return _REPLY_NONE.pack(_REPLY_NONE.size - 4, REPLY, request_id, T_NONE)
    out = bytearray(_REPLY_HEAD.pack(0, REPLY, request_id))
    _encode((value,), out)
    return _framed(out)


def error(request_id, exc):
    """An error reply: the CK_RV and the reason (reasons never hold secrets)."""
    out = bytearray(_ERR.pack(request_id, exc.rv))
    encode_value(str(exc.args[0]) if exc.args else "", out)
    return frame(ERROR, bytes(out))


_BYTES_REPLIES = (BYTES, OUT)


def read_reply(kind, body, call):
    """-> (request id, value) of a REPLY, raising the CKRError of an ERROR."""
    if kind == REPLY:
        if len(body) < 5:
            raise ProtocolError("truncated reply")
        request_id = _LEN.unpack_from(body)[0]
        if call.reply in _BYTES_REPLIES and len(body) >= 9 and body[4] == T_BYTES \
                and _LEN.unpack_from(body, 5)[0] == len(body) - 9:
            return request_id, bytes(body[9:])   # an output, the commonest reply: what _decode would give
        value, end = _decode(body, 4, 0)
        if end != len(body):
            raise ProtocolError("trailing bytes after the value")
        if not SHAPES[call.reply](value):
            raise ProtocolError(f"{call.name}: reply is not a {call.reply}")
        return request_id, value
    if kind == ERROR:
        if len(body) < _ERR.size:
            raise ProtocolError("truncated error")
        request_id, rv = _ERR.unpack(body[:_ERR.size])
        reason = decode_value(body, _ERR.size)
        raise CKRError(rv, reason if type(reason) is str else "")
    raise ProtocolError(f"unexpected frame type {kind}")
