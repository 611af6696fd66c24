"""ctconf, PTK-C's HSM configuration utility, with PTK-C's syntax where it is public:

    ctconf                   print the adapter block of device 0
    ctconf -f<letters>       replace the HSM's security flags (-f0: clear them all)
    ctconf -n<slot>          initialise the token of a slot (asks its label and SO PIN)
    ctconf -c<n> / -d<slot>  add / remove user slots: refused, the slot count is fixed here
    ctconf -t                synchronise the HSM's clock (nothing to do: it is the host's)
    ctconf -a<device>        select the adapter (device 0 only: the HSM of this client)
    ctconf -v                verbose: what each set flag does here
    ctconf --firmware X      (ptkhsm) set the emulated firmware version, e.g. 5.00.00

It runs the client stack (the same layers as libptkhsm.so), so with
ET_HSM_NETCLIENT_SERVERLIST set it configures that remote HSM. Changes log the
Admin Token's SO in on this connection: the SO PIN is asked for, or read from
the first line of --so-pin-file. docs/ctconf.md lists every option.
"""

import getpass
import os
import sys
import time

from . import constants as C
from .config import Config
from .errors import CKRError, ConfigError
from .hsm import adapter

RO = C.CKF_SERIAL_SESSION
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION


class ToolError(Exception):
    pass


def add_arguments(parser):
    parser.add_argument("-f", dest="flags", metavar="LETTERS",
                        help="replace the security flags: " + " ".join(f"{k}={v[1]}" for k, v in adapter.FLAGS.items())
                        + "; 0 clears them")
    parser.add_argument("-n", dest="init_slot", type=int, metavar="SLOT", help="initialise the token of SLOT")
    parser.add_argument("-l", "--label", help="token label for -n (asked for when missing)")
    parser.add_argument("-c", dest="add_slots", type=int, metavar="N", help="add N user slots (not supported)")
    parser.add_argument("-d", dest="remove_slot", type=int, metavar="SLOT", help="remove a user slot (not supported)")
    parser.add_argument("-t", dest="sync_clock", action="store_true", help="synchronise the adapter clock")
    parser.add_argument("-a", dest="device", type=int, default=0, metavar="DEVICE", help="adapter (0)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="verbose: what each flag does")
    parser.add_argument("--firmware", metavar="X.YY.ZZ", help="set the emulated firmware version (ptkhsm)")
    parser.add_argument("--so-pin-file", help="the SO PIN (Admin Token's for -f, the slot's for -n) from this file")


def _secret(path, prompt):
    if path:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n")
    return getpass.getpass(prompt).encode()


def command(args):
    from .cryptoki.client import Cryptoki
    if args.device != 0:
        print(f"ctconf: no device {args.device}: this client reaches one HSM, device 0", file=sys.stderr)
        return 1
    if args.add_slots is not None or args.remove_slot is not None:
        print("ctconf: -c/-d: this HSM has a fixed number of user slots (ET_PTKC_SW_USER_SLOTS on the HSM's "
              "host); change that item and restart the HSM instead", file=sys.stderr)
        return 1
    try:
        library = Cryptoki(Config())
        if _identity(library) is None and library.config.get("ET_HSM_NETCLIENT_SERVERLIST"):
            library = _with_channel(library, Cryptoki)
    except (CKRError, ConfigError, OSError) as exc:
        print(f"ctconf: {exc}", file=sys.stderr)
        return 1
    try:
        api = library.api
        if args.sync_clock:
            print("ctconf: the HSM's clock is its host's; nothing to synchronise")
        if args.init_slot is not None:
            init_token(api, args)
        if args.flags is not None or args.firmware:
            change(api, args)
        if args.init_slot is None and args.flags is None and not args.firmware and not args.sync_clock:
            print(show(library, args.verbose))
        return 0
    except (CKRError, ToolError, ValueError, OSError, EOFError) as exc:
        print(f"ctconf: {exc or 'no input'}", file=sys.stderr)
        return 1
    finally:
        library.finalize()


def _adapter(api, session):
    found = api.find_all(session, [(C.CKA_CLASS, C.CKO_ADAPTER)])
    if not found:
        raise ToolError("the HSM shows no adapter object on its Admin Token")
    return found[0]


def change(api, args):
    changes = []
    if args.flags is not None:
        changes.append((C.CKA_SECURITY_MODE, adapter.parse_letters(args.flags)))
    if args.firmware:
        changes.append((C.CKA_FW_VERSION, bytes(adapter.parse_firmware(args.firmware))))
    admin = api.slot_list()[-1]
    session = api.open_session(admin, RW)
    try:
        api.login(session, C.CKU_SO, _secret(args.so_pin_file, "Admin Token SO PIN: "))
        api.set_attributes(session, _adapter(api, session), changes)
    finally:
        api.close_session(session)
    if args.flags is not None:
        print(f"Security Mode : {adapter.describe(changes[0][1])}")


def init_token(api, args):
    if args.init_slot not in api.slot_list():
        raise ToolError(f"no slot {args.init_slot}")
    if args.init_slot == api.slot_list()[-1]:
        label = ""   # the Admin Token keeps its label, AdminToken(<serial>)
    else:
        label = args.label if args.label is not None else input("Token label: ")
    if len(label.encode()) > 32:
        raise ToolError("a token label has at most 32 bytes")
    api.init_token(args.init_slot, _secret(args.so_pin_file, "SO PIN: "), label.encode().ljust(32))
    print(f"Token in slot {args.init_slot} initialised")


def _with_channel(library, Cryptoki):
    """A remote HSM that asks for no channel: connect again asking for one (SMPR R for its
    serial), so the adapter block can show the identity the HSM signs its handshakes with."""
    api = library.api
    serial = api.token_info(api.slot_list()[-1])["serial"].decode().strip()
    library.finalize()
    name = f"ET_PTKC_{serial}_SMPR"
    config = Config()
    environ = dict(os.environ, **{name: (config.raw(name) or "") + "R"})
    return Cryptoki(Config(environ))


def _identity(library):
    """The HSM's SMS identity fingerprint and the channel's mode, when a channel is open."""
    link = getattr(library.api, "sms_link", None)   # the direct in-process api has none
    if link is None:
        return None
    return link.hsm["fingerprint"]


def show(library, verbose=False):
    api = library.api
    slots = api.slot_list()
    admin = slots[-1]
    info = api.token_info(admin)
    session = api.open_session(admin, RO)
    try:
        flags, firmware = api.get_attributes(session, _adapter(api, session),
                                             [C.CKA_SECURITY_MODE, C.CKA_FW_VERSION])
    finally:
        api.close_session(session)
    servers = library.config.get("ET_HSM_NETCLIENT_SERVERLIST")
    fingerprint = _identity(library) or _local_fingerprint(library, servers)
    rows = [
        ("Model", info["model"].decode().strip()),
        ("Serial Number", info["serial"].decode().strip()),
        ("Adapter Clock", time.strftime("%d/%m/%Y %H:%M:%S", time.localtime())),
        ("Battery Status", "GOOD"),
        ("Security Mode", adapter.describe(flags)),
        ("Transport Mode", f"Network ({' '.join(str(s) for s in servers)})" if servers else "Local (in process)"),
        ("FM Support", "Disabled"),
        ("FM Status", "Not supported"),
        ("Number of Slots", str(len(slots))),
        ("FW Version", adapter.firmware_text(firmware)),
        ("SMS Identity", fingerprint or "(shown once a channel is made: set ET_PTKC_<serial>_SMPR=R)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["Current Adapter Configuration for Device 0:", ""]
    lines += [f"{name.ljust(width)} : {value}" for name, value in rows]
    if verbose:
        for bit, name, effect in adapter.FLAGS.values():
            if flags & bit:
                lines.append(f"  {name}: {effect}")
    return "\n".join(lines)


def _local_fingerprint(library, servers):
    """In process the host is the HSM's console: its identity key is in the data directory."""
    if servers:
        return None
    from .hsm import identity
    from .sms import channel
    return channel.fingerprint(channel.spki(identity.load(library.config.get("ET_PTKC_SW_DATAPATH"))))


