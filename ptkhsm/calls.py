"""The call table: every PKCS#11 function the client forwards to the HSM (and
`find_all`, a search in one call for the layers stacked on the client).

One row per method of the client interface (docs/seams.md): its wire id, the
C functions that reach it, the kinds of its arguments and of its reply,
whether its first argument is a session handle and which arguments carry a
PIN or a secret (what Secure Messaging must protect, what logs must never
show). The wire codec checks requests and replies against it, the server
dispatches by it and the client proxy is generated from it; in process the
same methods are called directly.

Argument and reply kinds (what `wire.check` accepts):
  ulong      an unsigned integer below 2**64
  opt_ulong  an ulong or None (out_len: None is a length query)
  bytes      a byte string
  template   a sequence of (CKA, value) pairs; values bool, int, bytes or a template
  ulongs     a list of ulongs
  mechanism  a ptkhsm.mechparams.Mechanism
  out        bytes, or an int: the size of a result that did not fit out_len
  info       a dict of str -> int/bytes/(major, minor)
  tuple      a tuple of ulongs
  values     a list of attribute values or CKRErrors (C_GetAttributeValue)
  none       None

Length queries cross as sizes: an `out` reply is the result only when it fits
the caller's out_len; otherwise its size, and the result stays with the
session until the follow-up call fetches it.
"""

from collections import namedtuple

Call = namedtuple("Call", "id name functions args reply session pins secrets")

# The handle ranges of the interface, one below the other: a token object's handle is
# its store row (below SESSION_HANDLES); sessions and session objects count from
# SESSION_HANDLES; a layer stacked on the client (ExtToken) numbers its own objects from
# LAYER_HANDLES. All stay positive 32-bit numbers for callers that keep them in an int.
SESSION_HANDLES = 1 << 30
LAYER_HANDLES = 0x70000000

ULONG, OPT_ULONG, BYTES, TEMPLATE, ULONGS, MECHANISM = "ulong", "opt_ulong", "bytes", "template", "ulongs", "mechanism"
OUT, INFO, TUPLE, VALUES, NONE = "out", "info", "tuple", "values", "none"


def _rows():
    S = True  # takes a session handle
    rows = [
        # name, C functions, (arg name, kind)..., reply, session, PIN args, secret args/reply
        ("slot_list", ("C_GetSlotList",), (), ULONGS, False, (), ()),
        ("slot_info", ("C_GetSlotInfo",), (("slot_id", ULONG),), INFO, False, (), ()),
        ("token_info", ("C_GetTokenInfo",), (("slot_id", ULONG),), INFO, False, (), ()),
        ("mechanism_list", ("C_GetMechanismList",), (("slot_id", ULONG),), ULONGS, False, (), ()),
        ("mechanism_info", ("C_GetMechanismInfo",), (("slot_id", ULONG), ("ckm", ULONG)), TUPLE, False, (), ()),
        ("init_token", ("C_InitToken",), (("slot_id", ULONG), ("so_pin", BYTES), ("label", BYTES)), NONE,
         False, ("so_pin",), ()),
        ("init_pin", ("C_InitPIN",), (("handle", ULONG), ("pin", BYTES)), NONE, S, ("pin",), ()),
        ("set_pin", ("C_SetPIN",), (("handle", ULONG), ("old_pin", BYTES), ("new_pin", BYTES)), NONE, S,
         ("old_pin", "new_pin"), ()),
        ("open_session", ("C_OpenSession",), (("slot_id", ULONG), ("flags", ULONG)), ULONG, False, (), ()),
        ("close_session", ("C_CloseSession",), (("handle", ULONG),), NONE, S, (), ()),
        ("close_all_sessions", ("C_CloseAllSessions",), (("slot_id", ULONG),), NONE, False, (), ()),
        ("session_info", ("C_GetSessionInfo",), (("handle", ULONG),), TUPLE, S, (), ()),
        ("login", ("C_Login", "C_LoginUser"), (("handle", ULONG), ("user_type", ULONG), ("pin", BYTES)), NONE,
         S, ("pin",), ()),
        ("cancel", ("C_SessionCancel",), (("handle", ULONG), ("flags", ULONG)), NONE, S, (), ()),
        ("logout", ("C_Logout",), (("handle", ULONG),), NONE, S, (), ()),
        ("create_object", ("C_CreateObject",), (("handle", ULONG), ("template", TEMPLATE)), ULONG, S, (),
         ("template",)),
        ("copy_object", ("C_CopyObject",), (("handle", ULONG), ("obj_handle", ULONG), ("template", TEMPLATE)),
         ULONG, S, (), ()),
        ("destroy_object", ("C_DestroyObject",), (("handle", ULONG), ("obj_handle", ULONG)), NONE, S, (), ()),
        ("object_size", ("C_GetObjectSize",), (("handle", ULONG), ("obj_handle", ULONG)), ULONG, S, (), ()),
        ("get_attributes", ("C_GetAttributeValue",), (("handle", ULONG), ("obj_handle", ULONG), ("types", ULONGS)),
         VALUES, S, (), ("reply",)),
        ("set_attributes", ("C_SetAttributeValue",),
         (("handle", ULONG), ("obj_handle", ULONG), ("template", TEMPLATE)), NONE, S, (), ("template",)),
        ("find_init", ("C_FindObjectsInit",), (("handle", ULONG), ("template", TEMPLATE)), NONE, S, (), ()),
        ("find", ("C_FindObjects",), (("handle", ULONG), ("max_count", ULONG)), ULONGS, S, (), ()),
        ("find_final", ("C_FindObjectsFinal",), (("handle", ULONG),), NONE, S, (), ()),
    ]
    for op, secret_in, secret_out in (("encrypt", "data", None), ("decrypt", None, "reply")):
        cap = op.capitalize()
        rows += [
            (f"{op}_init", (f"C_{cap}Init",), (("handle", ULONG), ("mechanism", MECHANISM), ("key", ULONG)),
             NONE, S, (), ()),
            (op, (f"C_{cap}",), (("handle", ULONG), ("data", BYTES), ("out_len", OPT_ULONG)), OUT, S, (),
             tuple(x for x in (secret_in, secret_out) if x)),
            (f"{op}_update", (f"C_{cap}Update",), (("handle", ULONG), ("data", BYTES), ("out_len", OPT_ULONG)),
             OUT, S, (), tuple(x for x in (secret_in, secret_out) if x)),
            (f"{op}_final", (f"C_{cap}Final",), (("handle", ULONG), ("out_len", OPT_ULONG)), OUT, S, (),
             tuple(x for x in (secret_out,) if x)),
        ]
    rows += [
        ("digest_init", ("C_DigestInit",), (("handle", ULONG), ("mechanism", MECHANISM)), NONE, S, (), ()),
        ("digest", ("C_Digest",), (("handle", ULONG), ("data", BYTES), ("out_len", OPT_ULONG)), OUT, S, (),
         ("data",)),
        ("digest_update", ("C_DigestUpdate",), (("handle", ULONG), ("data", BYTES)), NONE, S, (), ("data",)),
        ("digest_key", ("C_DigestKey",), (("handle", ULONG), ("key_handle", ULONG)), NONE, S, (), ()),
        ("digest_final", ("C_DigestFinal",), (("handle", ULONG), ("out_len", OPT_ULONG)), OUT, S, (), ()),
    ]
    for op in ("sign", "verify"):
        cap = op.capitalize()
        rows.append((f"{op}_init", (f"C_{cap}Init",), (("handle", ULONG), ("mechanism", MECHANISM), ("key", ULONG)),
                     NONE, S, (), ()))
    rows += [
        ("sign", ("C_Sign",), (("handle", ULONG), ("data", BYTES), ("out_len", OPT_ULONG)), OUT, S, (), ("data",)),
        ("sign_update", ("C_SignUpdate",), (("handle", ULONG), ("data", BYTES)), NONE, S, (), ("data",)),
        ("sign_final", ("C_SignFinal",), (("handle", ULONG), ("out_len", OPT_ULONG)), OUT, S, (), ()),
        ("verify", ("C_Verify",), (("handle", ULONG), ("data", BYTES), ("signature", BYTES)), NONE, S, (), ("data",)),
        ("verify_update", ("C_VerifyUpdate",), (("handle", ULONG), ("data", BYTES)), NONE, S, (), ("data",)),
        ("verify_final", ("C_VerifyFinal",), (("handle", ULONG), ("signature", BYTES)), NONE, S, (), ()),
        ("generate_key", ("C_GenerateKey",), (("handle", ULONG), ("mechanism", MECHANISM), ("template", TEMPLATE)),
         ULONG, S, (), ()),
        ("generate_key_pair", ("C_GenerateKeyPair",),
         (("handle", ULONG), ("mechanism", MECHANISM), ("public_template", TEMPLATE),
          ("private_template", TEMPLATE)), TUPLE, S, (), ()),
        ("wrap_key", ("C_WrapKey",),
         (("handle", ULONG), ("mechanism", MECHANISM), ("wrapping_handle", ULONG), ("key_handle", ULONG)),
         BYTES, S, (), ()),
        ("unwrap_key", ("C_UnwrapKey",),
         (("handle", ULONG), ("mechanism", MECHANISM), ("unwrapping_handle", ULONG), ("wrapped", BYTES),
          ("template", TEMPLATE)), ULONG, S, (), ()),
        ("derive_key", ("C_DeriveKey",),
         (("handle", ULONG), ("mechanism", MECHANISM), ("base_handle", ULONG), ("template", TEMPLATE)),
         ULONG, S, (), ()),
        ("seed_random", ("C_SeedRandom",), (("handle", ULONG), ("seed", BYTES)), NONE, S, (), ("seed",)),
        ("generate_random", ("C_GenerateRandom",), (("handle", ULONG), ("length", ULONG)), BYTES, S, (),
         ("reply",)),
        ("finalize", ("C_Finalize",), (), NONE, False, (), ()),
        # No C function of its own: C_FindObjectsInit, C_FindObjects until the end and
        # C_FindObjectsFinal in one call, for a layer searching the HSM underneath it
        # (ExtToken): one round trip over the network instead of three.
        ("find_all", (), (("handle", ULONG), ("template", TEMPLATE)), ULONGS, S, (), ()),
    ]
    return rows


CALLS = tuple(Call(i, name, functions, args, reply, session, pins, secrets)
              for i, (name, functions, args, reply, session, pins, secrets) in enumerate(_rows(), 1))
BY_NAME = {call.name: call for call in CALLS}
BY_ID = {call.id: call for call in CALLS}
# The C functions the ABI answers itself, without asking the HSM.
LOCAL = ("C_Initialize", "C_GetInfo", "C_WaitForSlotEvent")


def arg_names(call):
    return tuple(name for name, _ in call.args)
