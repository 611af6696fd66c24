"""PTK-C configuration items: one table, one resolution order.

Each item is resolved on its own: environment (temporary) > user file
(`$HOME/.config/safenet/et_<class>`) > system file (`/etc/default/et_<class>`)
> built-in default. Files hold `NAME="value"` lines as PTK-C writes them, so
PTK-C users keep their files. A malformed value raises ConfigError naming the
item; nothing falls back silently.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


def _home_cryptoki():
    return str(Path.home() / ".cryptoki")


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


def _choice(*choices):
    def parse(name, text):
        if text not in choices:
            raise ConfigError(f"{name}={text!r}: not one of {', '.join(choices)}")
        return text
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
         "treat slot 0 as an external token (takes effect with the ExtToken layer)"),
    # read by the C shim before Python starts (ptkhsm_shim.c); listed here so it is validated and documented
    Item("ET_PTKC_HSM_PROCESS", "auto", _choice("auto", "in-process", "separate"),
         "where the HSM runs: in the host's process when it can share it (auto), always, or separately"),
]}


def _fail(name, text, why):
    raise ConfigError(f"{name}={text!r}: {why}")


_LINE = re.compile(r'^\s*(ET_[A-Z0-9_]+)\s*=\s*"?(.*?)"?\s*$')


def _read_file(path):
    values = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
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
            home = self._env.get("HOME") or str(Path.home())
            user = _read_file(Path(home) / ".config" / "safenet" / f"et_{klass}")
            system = _read_file(Path("/etc/default") / f"et_{klass}")
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

    def validate(self):
        """Resolve every item now, so a bad value fails C_Initialize rather than a later call."""
        for name in ITEMS:
            self.get(name)
        return self
