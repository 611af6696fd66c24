"""The whole test session's secrets check (docs/security.md, "Nothing secret in logs
or errors"): the PINs and key values the tests used must be in no log line and no
error text of the session.

`Secrets` holds what the tests used: the suite's PIN constants (`KNOWN_PINS`) and
the fuzzer's key, plus everything conftest.py collects while the tests run (every
PIN the HSM checks or seals under, every key value a template brings into it).
`Secrets.scan(data)` looks for them in a text:

- a key value of 8 bytes or more: any 8 of its bytes in a row, raw, as hex (any
  case, at any offset of a hex run) or inside a Python bytes literal (b'...');
  except 8 bytes with fewer than 4 different values (a run of zeros in a test
  key is in every zero-filled buffer and every "000..." of a log: no evidence);
- a PIN of 8 characters or more: as it is, or its hex;
- a shorter PIN ("1234" is the suite's user PIN): as a word of its own, between
  characters that are not letters or digits (a number such as 0x1234 or 61234
  is not that PIN); one of digits only ("1234") is a number as well ("session
  1234" is a handle), so it counts only quoted (its repr: '1234', b"1234") or
  labelled ("PIN 1234", "pin=1234").
"""

import ast
import re

WINDOW = 8
SHORT_PIN = 8
MIN_DISTINCT = 4  # bytes a window needs to tell of a key (fewer: zeros, padding, a repeated byte)

# PINs of the suite's tests, wherever they are set (the collected ones add the rest)
KNOWN_PINS = ("1234", "12345678",                                  # tests/conftest.py, tests/exttoken/helpers.py
              "us3r-pin-1", "n3w-pin-22", "wr0ng-pin-3",            # tests/reliability/secrets_child.py
              "fz-user-pin-77", "fz-so-pin-88",                     # tests/test_secrets.py
              "race-pin-a", "race-pin-b", "crash-pin-a", "crash-pin-b",  # tests/reliability
              "So-Pin-Dump-5519", "User-Pin-Dump-8842")             # tests/pg/test_pg_clients.py
FUZZ_AES_KEY = bytes(range(1, 18)) + bytes(15)  # tests/fuzz/fuzz.c setup(): CK_BYTE value[32]
KNOWN_VALUES = (FUZZ_AES_KEY[:17],)

_NOT_TEXT = re.compile(rb"[^\x20-\x7e\n\t]")
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{16,}")
_BYTES_LITERAL = re.compile(rb"""b'(?:[^'\\\n]|\\.)*'|b"(?:[^"\\\n]|\\.)*\"""")


class Secrets:
    def __init__(self):
        self.pins = {}      # PIN text -> where it was first used
        self.windows = {}   # 8 bytes of a key value -> description of the value
        self.hex = {}       # the same windows as lower-case hex
        self.values = 0
        self._text, self._text_list = {}, []
        for pin in KNOWN_PINS:
            self.add_pin(pin, "a PIN constant of the suite")
        for value in KNOWN_VALUES:
            self.add_value(value, "the fuzzer's AES key")

    def add_pin(self, pin, where):
        if isinstance(pin, (bytes, bytearray)):
            try:
                pin = bytes(pin).decode()
            except UnicodeDecodeError:
                return self.add_value(bytes(pin), f"a PIN of non-UTF-8 bytes ({where})")
        if len(pin) >= 4 and pin not in self.pins:  # shorter is never a valid PIN (4..32)
            self.pins[pin] = where

    def add_value(self, value, what):
        value = bytes(value)
        if len(value) < WINDOW or value[:WINDOW] in self.windows:
            return
        self.values += 1
        for start in range(len(value) - WINDOW + 1):
            window = value[start:start + WINDOW]
            if len(set(window)) < MIN_DISTINCT:
                continue
            self.windows.setdefault(window, what)
            self.hex.setdefault(window.hex(), what)

    def _short_pins(self):
        words = [re.escape(p.encode()) for p in self.pins if len(p) < SHORT_PIN and not p.isdigit()]
        numbers = [re.escape(p.encode()) for p in self.pins if len(p) < SHORT_PIN and p.isdigit()]
        forms = []
        if words:
            forms.append(rb"(?<![0-9A-Za-z])(?:" + b"|".join(words) + rb")(?![0-9A-Za-z])")
        if numbers:
            number = rb"(?:" + b"|".join(numbers) + rb")"
            forms.append(rb"(?<=['\"])" + number + rb"(?=['\"])")
            forms.append(rb"(?i:pin)\W{0,3}\b" + number + rb"(?![0-9A-Za-z])")
        return re.compile(b"|".join(forms)) if forms else None

    def scan(self, data, where):
        """-> [(where, line number, what was found)] for one text (bytes)."""
        found = []

        def note(offset, what):
            found.append((where, data.count(b"\n", 0, offset) + 1, what))

        lowered = data.lower()
        for pin, origin in self.pins.items():
            if len(pin) < SHORT_PIN:
                continue  # as a word, below
            for text, form, how in ((data, pin.encode(), ""), (lowered, pin.encode().hex().encode(), ", hex")):
                at = text.find(form)
                while at >= 0:
                    note(at, f"PIN {pin!r} ({origin}){how}")
                    at = text.find(form, at + 1)
        short = self._short_pins()
        for match in short.finditer(data) if short else ():
            text = match.group().decode()  # the PIN, or "PIN 1234"
            pin = max((p for p in self.pins if text.endswith(p)), key=len)
            note(match.start(), f"PIN {pin!r} ({self.pins[pin]})")
        for offset in self._raw_hits(data):
            note(offset, f"{self.windows[data[offset:offset + WINDOW]]}, raw")
        for match in _HEX_RUN.finditer(data):
            run = match.group().lower().decode()
            for start in range(len(run) - 2 * WINDOW + 1):
                if run[start:start + 2 * WINDOW] in self.hex:
                    note(match.start(), f"{self.hex[run[start:start + 2 * WINDOW]]}, hex")
                    break
        for match in _BYTES_LITERAL.finditer(data):
            try:
                literal = ast.literal_eval(match.group().decode("latin-1"))
            except (SyntaxError, ValueError):
                continue
            for start in self._raw_hits(literal):
                note(match.start(), f"{self.windows[literal[start:start + WINDOW]]}, bytes repr")
                break
        return sorted(set(found))

    def _raw_hits(self, data):
        """Offsets of the key windows in `data`. Logs are text: a window with a byte that
        is not printable ASCII can only be where `data` has one too, which is rare; the
        few windows of text are looked for one by one."""
        hits = set()
        windows = self.windows
        for match in _NOT_TEXT.finditer(data):
            for i in range(max(0, match.start() - WINDOW + 1), match.start() + 1):
                if data[i:i + WINDOW] in windows:
                    hits.add(i)
        for window in self._text_windows():
            at = data.find(window)
            while at >= 0:
                hits.add(at)
                at = data.find(window, at + 1)
        return sorted(hits)

    def _text_windows(self):
        if len(self._text) != len(self.windows):  # windows were added since
            self._text = {w: None for w in self.windows}
            self._text_list = [w for w in self.windows if not _NOT_TEXT.search(w)]
        return self._text_list
