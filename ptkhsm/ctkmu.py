"""ctkmu, PTK-C's key management utility, with PTK-C's syntax where it is public:

    ctkmu l -s<slot>                               list objects (slot 0: the ExtToken objects too)
    ctkmu c -s<slot> -t<type> -z<size> -n<label> -a<letters> [-C <curve>]   create a key
    ctkmu d -s<slot> -n<label>                     delete the objects with that label
    ctkmu t -s<slot> -l<label>                     initialise a token
    ctkmu p -s<slot>                               set the user PIN (the SO initialises it)
    ctkmu x -s0 <file>                             back up the external token
    ctkmu i -s0 <file>                             restore it into a freshly initialised token
    ctkmu compact -s0                              reclaim the space of deleted objects

It runs the client stack in process (the same layers as libptkhsm.so). PINs and the
backup passphrase are asked for, or read from the first line of a file
(--pin-file, --so-pin-file, --new-pin-file, --passphrase-file). Long work shows progress
on stderr. The backup format is in docs/exttoken.md.
"""

import getpass
import hashlib
import os
import struct
import sys
import zlib

from . import constants as C
from .errors import CKRError
from .mechparams import Mechanism

RO = C.CKF_SERIAL_SESSION
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION

# -a letters -> attribute set TRUE (as PTK-C's ctkmu; the rest FALSE).
LETTERS = {"T": C.CKA_SENSITIVE, "M": C.CKA_MODIFIABLE, "R": C.CKA_DERIVE, "E": C.CKA_ENCRYPT,
           "D": C.CKA_DECRYPT, "S": C.CKA_SIGN, "V": C.CKA_VERIFY, "W": C.CKA_WRAP, "U": C.CKA_UNWRAP,
           "X": C.CKA_EXTRACTABLE, "P": C.CKA_PRIVATE}
SECRET_TYPES = {"aes": (C.CKM_AES_KEY_GEN, C.CKK_AES), "des2": (C.CKM_DES2_KEY_GEN, C.CKK_DES2),
                "des3": (C.CKM_DES3_KEY_GEN, C.CKK_DES3),
                "generic": (C.CKM_GENERIC_SECRET_KEY_GEN, C.CKK_GENERIC_SECRET)}
CURVES = {"secp256r1": "06082a8648ce3d030107", "prime256v1": "06082a8648ce3d030107",
          "secp384r1": "06052b81040022", "secp521r1": "06052b81040023"}
CLASS_NAMES = {C.CKO_DATA: "Data", C.CKO_CERTIFICATE: "Certificate", C.CKO_PUBLIC_KEY: "Public Key",
               C.CKO_PRIVATE_KEY: "Private Key", C.CKO_SECRET_KEY: "Secret Key",
               C.CKO_DOMAIN_PARAMETERS: "Domain Parameters"}

BACKUP_MAGIC = b"PTKCBAK1"
BACKUP_VERSION = 1
BACKUP_ITERATIONS = 200_000
_U32 = struct.Struct(">I")


class ToolError(Exception):
    pass


def add_arguments(parser):
    parser.add_argument("action", choices=["l", "c", "d", "t", "p", "x", "i", "compact"])
    parser.add_argument("file", nargs="?", help="backup file (x, i)")
    parser.add_argument("-s", dest="slot", type=int, default=0, help="slot")
    parser.add_argument("-t", dest="type", help="key type: aes, des2, des3, generic, rsa, ec")
    parser.add_argument("-z", dest="size", type=int, help="key size (bytes; bits for rsa)")
    parser.add_argument("-n", dest="name", help="object label")
    parser.add_argument("-l", dest="label", help="token label (t)")
    parser.add_argument("-a", dest="attrs", default="", help="attribute letters " + "".join(LETTERS))
    parser.add_argument("-C", dest="curve", default="secp256r1", help="EC curve")
    parser.add_argument("--pin-file", help="user PIN from this file")
    parser.add_argument("--so-pin-file", help="SO PIN from this file")
    parser.add_argument("--new-pin-file", help="new user PIN from this file (p)")
    parser.add_argument("--passphrase-file", help="backup passphrase from this file (x, i)")
    parser.add_argument("--force", action="store_true", help="i: overwrite ExtToken files of that name")


def _secret(path, prompt):
    if path:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n")
    return getpass.getpass(prompt).encode()


def progress(done, total, what):
    if total:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r{what} [{'#' * filled}{' ' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def command(args, extra=()):
    extra = list(extra)
    if extra and args.file is None and not extra[0].startswith("-"):
        args.file = extra.pop(0)
    if extra:
        print(f"ctkmu: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    from .cryptoki.client import Cryptoki
    from .exttoken import stack
    library = stack(Cryptoki())
    try:
        return COMMANDS[args.action](library.api, args) or 0
    except (CKRError, ToolError, OSError) as exc:
        print(f"ctkmu: {exc}", file=sys.stderr)
        return 1
    finally:
        library.finalize()


def _login(api, args, flags=RO, user=C.CKU_USER):
    session = api.open_session(args.slot, flags)
    if user == C.CKU_SO:
        api.login(session, C.CKU_SO, _secret(args.so_pin_file, "SO PIN: "))
    else:
        api.login(session, C.CKU_USER, _secret(args.pin_file, "User PIN: "))
    return session


def _describe(api, session, handle):
    types = [C.CKA_CLASS, C.CKA_KEY_TYPE, C.CKA_LABEL, C.CKA_ID, C.CKA_PRIVATE]
    cls, ckk, label, ident, private = [None if isinstance(v, CKRError) else v
                                       for v in api.get_attributes(session, handle, types)]
    kind = CLASS_NAMES.get(cls, hex(cls or 0))
    if ckk is not None:
        try:
            kind += f" ({C.CKK(ckk).name[4:]})"
        except ValueError:
            kind += f" ({ckk:#x})"
    text = f"{handle:>10}  {kind:<24} {'private' if private else 'public ':<8} {(label or b'').decode(errors='replace')}"
    return text + (f"  id={ident.hex()}" if ident else "")


def list_objects(api, args):
    session = _login(api, args)
    if args.slot == 0 and hasattr(api, "internal_objects"):   # the three ExtToken objects, as in PTK-C
        for handle in api.internal_objects().values():
            if handle is not None:
                print(_describe(api.lower, session, handle))
    for handle in api.find_all(session, [(C.CKA_TOKEN, True)]):
        print(_describe(api, session, handle))


def create_key(api, args):
    session = _login(api, args, RW)
    letters = set(args.attrs)
    unknown = letters - set(LETTERS)
    if unknown:
        raise ToolError(f"-a: unknown letters {''.join(sorted(unknown))} (known: {''.join(LETTERS)})")
    flags = [(attr, letter in letters) for letter, attr in LETTERS.items()]
    common = [(C.CKA_TOKEN, True), (C.CKA_LABEL, (args.name or "").encode())]
    kind = (args.type or "").lower()
    if kind in SECRET_TYPES:
        mechanism, ckk = SECRET_TYPES[kind]
        template = common + flags
        if kind in ("aes", "generic"):
            template.append((C.CKA_VALUE_LEN, args.size or 32))
        handle = api.generate_key(session, Mechanism(mechanism), template)
        print(f"created {handle}")
    elif kind in ("rsa", "ec"):
        public_flags = [(a, v) for a, v in flags if a in (C.CKA_ENCRYPT, C.CKA_VERIFY, C.CKA_WRAP, C.CKA_DERIVE,
                                                          C.CKA_MODIFIABLE)]
        public_flags = [(a, v) for a, v in public_flags if a != C.CKA_DERIVE or kind == "ec"]
        private_flags = [(a, v) for a, v in flags if a not in (C.CKA_ENCRYPT, C.CKA_VERIFY, C.CKA_WRAP)]
        if kind == "rsa":
            mechanism = Mechanism(C.CKM_RSA_PKCS_KEY_PAIR_GEN)
            public = common + public_flags + [(C.CKA_MODULUS_BITS, args.size or 2048),
                                              (C.CKA_PUBLIC_EXPONENT, b"\x01\x00\x01")]
        else:
            if args.curve not in CURVES:
                raise ToolError(f"-C: unknown curve {args.curve} (known: {', '.join(CURVES)})")
            mechanism = Mechanism(C.CKM_EC_KEY_PAIR_GEN)
            public = common + public_flags + [(C.CKA_EC_PARAMS, bytes.fromhex(CURVES[args.curve]))]
        pub, prv = api.generate_key_pair(session, mechanism, public, common + private_flags)
        print(f"created {pub} {prv}")
    else:
        raise ToolError(f"-t: key type {args.type!r} not known (aes, des2, des3, generic, rsa, ec)")


def delete(api, args):
    if not args.name:
        raise ToolError("d needs -n<label>")
    session = _login(api, args, RW)
    handles = api.find_all(session, [(C.CKA_TOKEN, True), (C.CKA_LABEL, args.name.encode())])
    if not handles:
        raise ToolError(f"no object labelled {args.name!r}")
    for handle in handles:
        api.destroy_object(session, handle)
    print(f"deleted {len(handles)}")


def init_token(api, args):
    so_pin = _secret(args.so_pin_file, "SO PIN: ")
    api.init_token(args.slot, so_pin, (args.label or "").encode()[:32].ljust(32))
    print(f"token in slot {args.slot} initialised")


def set_pin(api, args):
    session = _login(api, args, RW, user=C.CKU_SO)
    api.init_pin(session, _secret(args.new_pin_file, "New user PIN: "))
    print("user PIN set")


# -- backup ----------------------------------------------------------------------------
def _field(data):
    return _U32.pack(len(data)) + data


def _fields(raw):
    pos, out = 0, []
    while pos < len(raw):
        (size,) = _U32.unpack_from(raw, pos)
        out.append(raw[pos + 4:pos + 4 + size])
        pos += 4 + size
    if pos != len(raw):
        raise ToolError("backup file is truncated")
    return out


def _passphrase_key(api, session, passphrase, salt, iterations):
    value = hashlib.pbkdf2_hmac("sha256", passphrase, salt, iterations, 32)
    return api.lower.create_object(session, [
        (C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_TOKEN, False),
        (C.CKA_VALUE, value), (C.CKA_WRAP, True), (C.CKA_UNWRAP, True), (C.CKA_ENCRYPT, False),
        (C.CKA_DECRYPT, False)])


def _require_exttoken(api, args):
    if args.slot != 0 or not hasattr(api, "external_files"):
        raise ToolError("x, i and compact work on slot 0's external token (ET_PTKC_EXTTOKEN_ENABLE on)")
    if not args.file and args.action in ("x", "i"):
        raise ToolError(f"{args.action} needs a backup file name")


def export(api, args):
    _require_exttoken(api, args)
    session = _login(api, args, RW)
    passphrase = _secret(args.passphrase_file, "Backup passphrase: ")
    salt = os.urandom(16)
    kek = _passphrase_key(api, session, passphrase, salt, BACKUP_ITERATIONS)
    internal = api.internal_objects()
    files = api.external_files()
    entries = [(b"name", os.path.basename(files.base).encode())]
    for kind in ("public", "private"):
        blob = api.lower.wrap_key(session, Mechanism(C.CKM_WRAPKEY_AES_KWP), kek, internal[kind])
        entries.append((f"master.{kind}".encode(), blob))
    for file_name, content in files.snapshot(lambda done, total: progress(done, total, "export")).items():
        entries.append((file_name.encode(), content))
    body = BACKUP_MAGIC + _U32.pack(BACKUP_VERSION) + _U32.pack(BACKUP_ITERATIONS) + salt + b"".join(
        _field(name) + _field(content) for name, content in entries)
    tmp = args.file + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body + _U32.pack(zlib.crc32(body)))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, args.file)
    print(f"exported {len(files.index)} objects to {args.file}")


def _read_backup(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != BACKUP_MAGIC or len(raw) < 36 or _U32.pack(zlib.crc32(raw[:-4])) != raw[-4:]:
        raise ToolError(f"{path}: not a ctkmu backup, or damaged")
    version, iterations = struct.unpack_from(">II", raw, 8)
    if version != BACKUP_VERSION:
        raise ToolError(f"{path}: backup version {version} is not supported")
    salt = raw[16:32]
    items = _fields(raw[32:-4])
    entries = dict(zip(items[0::2], items[1::2]))
    return iterations, salt, entries


def restore(api, args):
    _require_exttoken(api, args)
    iterations, salt, entries = _read_backup(args.file)
    name = entries[b"name"].decode()
    if not name.isalnum():
        raise ToolError("backup names an invalid ExtToken file")
    session = _login(api, args, RW)
    if api.find_all(session, [(C.CKA_TOKEN, True)]):
        raise ToolError("the token already holds objects: restore into a freshly initialised token")
    passphrase = _secret(args.passphrase_file, "Backup passphrase: ")
    kek = _passphrase_key(api, session, passphrase, salt, iterations)
    fresh = api.external_files()
    directory = fresh.directory
    # The fresh token's own ExtToken objects (and their empty files) make way for the backup's.
    hsm = api.lower
    for handle in api.internal_objects().values():
        if handle is not None:
            hsm.destroy_object(session, handle)
    fresh.refresh()
    if not fresh.index:
        for path in fresh.paths():
            if os.path.exists(path):
                os.unlink(path)
    api.forget()
    for kind in ("public", "private"):
        try:
            hsm.unwrap_key(session, Mechanism(C.CKM_WRAPKEY_AES_KWP), kek, entries[f"master.{kind}".encode()], [])
        except CKRError as exc:
            if exc.rv == C.CKR_SIGNATURE_INVALID:
                raise ToolError("wrong passphrase, or the backup was changed") from None
            raise
    names = [n for n in entries if n.startswith(name.encode() + b".")]
    for n, file_name in enumerate(names, 1):
        path = os.path.join(directory, file_name.decode())
        if os.path.exists(path) and not args.force:
            raise ToolError(f"{path} exists (use --force to overwrite)")
        tmp = path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(entries[file_name])
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        progress(n, len(names), "import")
    hsm.create_object(session, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_PRIVATE, False),
                                (C.CKA_LABEL, b"ExtToken"), (C.CKA_APPLICATION, b"ExtToken"),
                                (C.CKA_VALUE, b"file:" + name.encode())])
    api.forget()
    files = api.external_files()
    files.refresh()
    print(f"imported {len(files.index)} objects")


def compact(api, args):
    _require_exttoken(api, args)
    session = api.open_session(args.slot, RO)
    files = api.external_files()
    files.refresh()
    reclaimed = files.compact(lambda done, total: progress(done, total, "compact"))
    api.close_session(session)
    print(f"compacted: {reclaimed} bytes reclaimed, {len(files.index)} objects kept")


COMMANDS = {"l": list_objects, "c": create_key, "d": delete, "t": init_token, "p": set_pin,
            "x": export, "i": restore, "compact": compact}
