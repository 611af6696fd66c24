"""PTK-C configuration items: one table, one resolution order.

Each item is resolved on its own: environment (temporary) > user file
(`$HOME/.config/safenet/et_<class>`) > system file (`/etc/default/et_<class>`)
> built-in default. Files hold `NAME="value"` lines as PTK-C writes them, so
PTK-C users keep their files. A malformed value raises ConfigError naming the
item; nothing falls back silently.
"""

import grp
import os
import pwd
import re
from dataclasses import dataclass

from .errors import ConfigError


def _home_cryptoki():
    return os.path.join(os.path.expanduser("~"), ".cryptoki")


def _int_range(low, high):
    def parse(name, text):
        try:
            value = int(text, 0)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={text!r}: must be between {low} and {high}")
        return value
    return parse


def _bool(name, text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r}: not a boolean (use 1/0, true/false, yes/no)")


def _choice(*choices, upper=False):
    """One of `choices`; with upper, written in any case (the C shim reads the others as they are)."""
    def parse(name, text):
        value = text.strip().upper() if upper else text
        if value not in choices:
            raise ConfigError(f"{name}={text!r}: not one of {', '.join(choices)}")
        return value
    return parse


def _path(name, text):
    if not text:
        raise ConfigError(f"{name} is empty: give a directory")
    return os.path.expanduser(text)


@dataclass(frozen=True)
class Item:
    name: str
    default: object  # a value, or a callable giving one
    parse: object
    doc: str


ITEMS = {item.name: item for item in [
    Item("ET_PTKC_SW_DATAPATH", _home_cryptoki, _path,
         "data directory of the HSM (token store), created mode 0700"),
    Item("ET_PTKC_SW_STORAGE_KEYFILE", None, _path,
         "file of the storage key sealing public objects, created 0600 (default: storage.key "
         "in the data directory; put it elsewhere to keep it out of the data directory's backups)"),
    Item("ET_PTKC_SW_USER_SLOTS", 2, _int_range(1, 32),
         "number of user token slots before the Admin Token"),
    Item("ET_PTKC_SW_SERIAL", "PTK0000001", lambda n, t: t.strip() or _fail(n, t, "empty serial"),
         "HSM serial number (token serials derive from it)"),
    Item("ET_PTKC_SW_MAX_LOGIN_FAILURES", 10, _int_range(1, 1000),
         "consecutive wrong PINs before the PIN is locked"),
    Item("ET_PTKC_SW_MIN_PIN", 4, _int_range(1, 255), "shortest PIN accepted"),
    Item("ET_PTKC_SW_MAX_PIN", 32, _int_range(1, 255), "longest PIN accepted"),
    Item("ET_PTKC_SW_PIN_KDF_ITERATIONS", 20000, _int_range(1000, 10_000_000),
         "PBKDF2-SHA256 iterations turning a PIN into its key-encryption key"),
    Item("ET_PTKC_EXTTOKEN_ENABLE", True, _bool,
         "treat slot 0 as an external token (its token objects kept on the host, docs/exttoken.md)"),
    Item("ET_PTKC_EXTTOKEN_PATH", None, _path,
         "directory of the ExtToken ODS/ORT files (default: <ET_PTKC_SW_DATAPATH>/exttoken)"),
    Item("ET_PTKC_EXTTOKEN_MAXLOADED", 1024, _int_range(2, 10_000_000),
         "external objects kept unwrapped in the HSM at once, least used unloaded first"),
    Item("ET_PTKC_EXTTOKEN_MASTERKEY", "DES2", _choice("DES2", "AES256", upper=True),
         "master key type for a new external token: DES2 (PTK-C) or AES256 (CKM_WRAPKEY_AES_KWP)"),
    Item("ET_HSM_NETCLIENT_SERVERLIST", (), lambda n, t: _server_list(n, t),
         "servers of `ptkhsm serve` (space-separated host[:port] or /path/of/unix.socket); "
         "empty: the embedded HSM"),
    Item("ET_HSM_NETCLIENT_CONNECT_TIMEOUT", 5, _int_range(1, 3600),
         "seconds to wait for a server to accept a connection and answer the handshake"),
    Item("ET_HSM_NETCLIENT_REPLY_TIMEOUT", 600, _int_range(0, 86400),
         "seconds to wait for the reply to a call (0: no limit); then the server counts as lost"),
    Item("ET_HSM_NETCLIENT_POLL_US", 100, _int_range(0, 100_000),
         "microseconds a call alone on its connection looks for its reply before it sleeps "
         "(a sleeping thread's wake-up costs more than a short call; 0: sleep at once)"),
    Item("ET_HSM_NETCLIENT_RECONNECT", True, _bool,
         "after a server is lost, calls without a session (C_OpenSession...) go to the next server"),
    Item("ET_PTKC_GENERAL_LIBRARY_MODE", "NORMAL", lambda n, t: _library_mode(n, t),
         "NORMAL, or HA: sessions survive the loss of their server (docs/network.md)"),
    Item("ET_PTKC_HA_RECOVER_DELAY", 1.0, lambda n, t: _minutes(n, t),
         "HA: minutes a lost server rests: tried only after every other one (0: never again; fractions allowed)"),
    Item("ET_PTKC_HA_RECOVER_WAIT", False, _bool,
         "HA: when no server answers, wait (up to the reply time-out) instead of failing at once"),
    Item("ET_HSM_NETSERVER_WORKERS", 0, _int_range(0, 64),
         "worker processes of `ptkhsm serve` (0: one per CPU)"),
    Item("ET_HSM_NETSERVER_POLL_US", 100, _int_range(0, 100_000),
         "microseconds a worker's connection looks for its next request before it sleeps, "
         "while no other request runs in that worker (0: sleep at once)"),
    Item("ET_HSM_NETSERVER_SOCKET_MODE", 0o600, lambda n, t: _mode(n, t),
         "permission bits of `ptkhsm serve --unix`'s socket (600: its owner only; 660: its group too)"),
    Item("ET_HSM_NETSERVER_SOCKET_OWNER", None, lambda n, t: _account(n, t, "user"),
         "owner of `ptkhsm serve --unix`'s socket, a user name or uid (default: the server's user)"),
    Item("ET_HSM_NETSERVER_SOCKET_GROUP", None, lambda n, t: _account(n, t, "group"),
         "group of `ptkhsm serve --unix`'s socket, a group name or gid (default: the server's group)"),
    Item("ET_PTKC_SW_STORE", "", lambda n, t: t.strip(),
         "token store: empty = sqlite in the data directory; a libpq connection string "
         "or postgresql:// URI = that PostgreSQL database (docs/store-postgresql.md)"),
    Item("ET_PTKC_SW_STORE_CONNECT_TIMEOUT", 5, _int_range(1, 600),
         "seconds allowed to connect to the PostgreSQL store before CKR_DEVICE_ERROR"),
    Item("ET_PTKC_SW_STORE_STATEMENT_TIMEOUT", 10, _int_range(1, 3600),
         "seconds a PostgreSQL store statement (or lock wait) may take before CKR_DEVICE_ERROR"),
    Item("ET_PTKC_SMS_MODE", "ADH2", _choice("ADH2", "ADH", upper=True),
         "Secure Messaging key agreement: ADH2 (NIST-approved, SHA-512 MACs) or legacy ADH "
         "(only with HSM firmware older than 5.01.00; docs/sms.md)"),
    Item("ET_PTKC_SMS_BLOCKS", 1 << 32, _int_range(1, 1 << 64),
         "SMS session-key rollover after this many cipher blocks encrypted or decrypted"),
    Item("ET_PTKC_SMS_HOURS", 24, _int_range(1, 100_000),
         "SMS session-key rollover after this many hours since the channel was made"),
    # per HSM serial: ET_PTKC_<serial>_SMPR, ET_PTKC_<serial>_SMS_IDENTITY (Config.get_for)
    Item("ET_PTKC_<serial>_SMPR", "", lambda n, t: _smpr(n, t),
         "Secure Messaging Policy Register of that HSM: letters E (no clear PINs), S (auth "
         "protection), R (auth replies), OR'ed with the HSM's flags"),
    Item("ET_PTKC_<serial>_SMS_IDENTITY", "", lambda n, t: _fingerprint(n, t),
         "pinned SMS identity of that HSM: the SHA-256 fingerprint `ctconf` shows; another "
         "identity fails closed (CKR_CANNOT_DERIVE_KEYS)"),
    # read by the C shim before Python starts (ptkhsm_shim.c); listed here so it is validated and documented
    Item("ET_PTKC_HSM_PROCESS", "auto", _choice("auto", "in-process", "separate"),
         "where the HSM runs: in the host's process when it can share it (auto), always, or separately"),
]}


def _smpr(name, text):
    letters = text.strip().upper()
    bad = set(letters) - set("ESR")
    if bad:
        raise ConfigError(f"{name}={text!r}: unknown letter(s) {''.join(sorted(bad))} (use E, S, R)")
    return letters


def _fingerprint(name, text):
    value = text.strip().lower().replace(":", "")
    if value and (len(value) != 64 or set(value) - set("0123456789abcdef")):
        raise ConfigError(f"{name}={text!r}: not a SHA-256 fingerprint (64 hex digits)")
    return value


PER_SERIAL = "<serial>"


def _library_mode(name, text):
    # PTK-C falls back to NORMAL on an invalid value; we say so instead (no silent default).
    mode = text.strip().upper()
    if mode not in ("NORMAL", "HA"):
        raise ConfigError(f"{name}={text!r}: use NORMAL or HA (WLD is not supported)")
    return mode


def _mode(name, text):
    """Permission bits in octal, as chmod takes them: 660, 0660 or 0o660."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        value = int(digits, 8)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: not octal permission bits (e.g. 660)") from None
    if not 0 <= value <= 0o777:
        raise ConfigError(f"{name}={text!r}: permission bits are at most 777")
    return value


def _account(name, text, kind):
    """A user or group given by name or number -> its id; empty: None (the server's own)."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"{name}={text!r}: no such {kind}") from None


def _minutes(name, text):
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: not a number of minutes") from None
    if not 0 <= value <= 10080:
        raise ConfigError(f"{name}={text!r}: must be between 0 and 10080 minutes")
    return value


NETSERVER_PORT = 12396  # PTK-C's netserver port, the default of host[:port]


def _server_list(name, text):
    """-> (("tcp", host, port) | ("unix", path), ...); PTK-C separates entries by spaces."""
    servers = []
    for entry in text.split():
        if entry.startswith(("/", "unix:")):
            servers.append(_Address(("unix", entry.removeprefix("unix:"))))
            continue
        host, sep, port = entry.rpartition(":") if not entry.endswith("]") else (entry, "", "")
        if not sep or (":" in host and not host.startswith("[")):  # a bare IPv6 address has colons
            host, port = entry, str(NETSERVER_PORT)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {entry!r}: the port must be a number between 1 and 65535")
        servers.append(_Address(("tcp", host.strip("[]"), int(port))))
    return tuple(servers)


class _Address(tuple):
    def __str__(self):
        return self[1] if self[0] == "unix" else f"{self[1]}:{self[2]}"


def _fail(name, text, why):
    raise ConfigError(f"{name}={text!r}: {why}")


_LINE = re.compile(r'^\s*(ET_[A-Z0-9_]+)\s*=\s*"?(.*?)"?\s*$')


def _read_file(path):
    values = {}
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {path}: not UTF-8 text (byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{path}:{number}: not a NAME=\"value\" line")
        values[match.group(1)] = match.group(2)
    return values


def _class_of(name):
    return name.split("_")[1].lower()


class Config:
    """Resolved configuration items. Reads the files once per instance."""

    def __init__(self, environ=None):
        self._env = os.environ if environ is None else environ
        self._files = {}
        self._cache = {}

    def _layers(self, klass):
        if klass not in self._files:
            home = self._env.get("HOME") or os.path.expanduser("~")
            user = _read_file(os.path.join(home, ".config", "safenet", f"et_{klass}"))
            system = _read_file(f"/etc/default/et_{klass}")
            self._files[klass] = (user, system)
        return self._files[klass]

    def raw(self, name):
        """The text of an item from the first level that has it, or None."""
        if name in self._env:
            return self._env[name]
        for layer in self._layers(_class_of(name)):
            if name in layer:
                return layer[name]
        return None

    def get(self, name):
        if name in self._cache:
            return self._cache[name]
        item = ITEMS[name]
        text = self.raw(name)
        if text is None:
            value = item.default() if callable(item.default) else item.default
        else:
            value = item.parse(name, text)
        self._cache[name] = value
        return value

    def get_for(self, serial, template):
        """A per-serial item: get_for("PTK0000001", "ET_PTKC_<serial>_SMPR")."""
        name = template.replace(PER_SERIAL, serial)
        if name not in self._cache:
            item = ITEMS[template]
            text = self.raw(name)
            self._cache[name] = item.default if text is None else item.parse(name, text)
        return self._cache[name]

    def validate(self):
        """Resolve every item now, so a bad value fails C_Initialize rather than a later call."""
        for name in ITEMS:
            if PER_SERIAL not in name:
                self.get(name)
        return self
