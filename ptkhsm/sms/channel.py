"""An SMS channel: the handshake that makes its keys and the records it protects.

The design and its reasons are in docs/sms.md. In short:

- Handshake (client speaks first): HELLO carries the mode the client insists
  on (ADH2 or legacy ADH), a 32-byte nonce and an ephemeral DH public value;
  ACCEPT carries the HSM's nonce, its ephemeral public value, serial, firmware
  version, security flags and identity key, and an ECDSA P-521 / SHA-512
  signature of the transcript by that key. Both sides then prove the keys
  (FINISHED, an HMAC of the transcript, client first): bilateral key
  confirmation. A client that pins the HSM's identity fingerprint fails
  closed on any other identity; one that does not behaves as PTK-C's
  anonymous DH does.
- Keys: the DH secret goes through SP 800-56C's one-step KDF (SHA-512) into a
  channel master secret bound to the transcript; each epoch's keys come from
  it through SP 800-108's KDF in counter mode (HMAC-SHA-512): one encryption
  and one MAC key per direction. Legacy ADH makes a triple-length DES key
  (SHA-1 KDF) and uses 3DES and HMAC-SHA-1 the same way.
- Records: header (version, kind, protection, epoch, sequence number,
  length), then the body, encrypted (AES-256-CTR / 3DES-CBC) when asked, and
  a MAC (HMAC-SHA-512/256 / HMAC-SHA-1) over header and body when asked;
  encryption always carries a MAC. Sequence numbers run per direction from 0:
  a record out of order, repeated, cut or altered ends the channel.
- Rollover: the client counts the cipher blocks it encrypts and decrypts and
  the channel's age; past ET_PTKC_SMS_BLOCKS or ET_PTKC_SMS_HOURS its next
  request uses the next epoch's keys, and the HSM answers in that epoch. No
  round trip, no call fails. The HSM ends a channel whose client runs past
  twice the limit without rolling over.
"""

import hmac
import os
import struct
import threading
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from .. import constants as C
from ..errors import CKRError
from ..ffdh import DHPublicNumbers
from . import groups

VERSION = 1
ADH, ADH2 = 1, 2
MODE_NAMES = {"ADH": ADH, "ADH2": ADH2}
LEGACY_FIRMWARE_BELOW = (5, 1, 0)  # PTK-C: firmware 5.01.00 and newer speaks ADH2 only

# record kinds
HELLO, ACCEPT, FINISHED, DATA, CLOSE = 1, 2, 3, 4, 5
# protection bits of a record
ENCRYPTED, SIGNED = 0x1, 0x2
_SAFE = (0, SIGNED, ENCRYPTED | SIGNED)   # what a record may claim: never encryption without a MAC

_HEADER = struct.Struct(">BBBIQI")  # version, kind, protection, epoch, sequence, body length
HEADER_SIZE = _HEADER.size
MAX_BODY = 1 << 26
NONCE = 32
_TO_HSM, _FROM_HSM = b"request", b"reply"


class Suite:
    """What a mode uses: key agreement, KDF hash, cipher and MAC."""

    def __init__(self, mode):
        self.mode = mode
        self.adh2 = mode == ADH2
        self.hash = hashes.SHA512 if self.adh2 else hashes.SHA1
        self.enc_len = 32 if self.adh2 else 24
        self.mac_len = 64 if self.adh2 else 20
        self.tag_len = 32 if self.adh2 else 20
        self.block = 16 if self.adh2 else 8

    def new_private(self):
        if self.adh2:
            return ec.generate_private_key(groups.ADH2_CURVE())
        return groups.modp2048().generate_private_key()

    def public_bytes(self, private):
        public = private.public_key()
        if self.adh2:
            return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return public.public_numbers().y.to_bytes(256, "big")

    def exchange(self, private, peer):
        try:
            if self.adh2:
                point = ec.EllipticCurvePublicKey.from_encoded_point(groups.ADH2_CURVE(), peer)
                return private.exchange(ec.ECDH(), point)
            numbers = groups.modp2048().parameter_numbers()
            y = int.from_bytes(peer, "big")
            if not 1 < y < numbers.p - 1:
                raise ValueError("public value out of range")
            return private.exchange(DHPublicNumbers(y, numbers).public_key())
        except ValueError:
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the peer's DH public value is invalid") from None

    def master(self, secret, transcript):
        """SP 800-56C one-step KDF: the channel master secret, bound to the transcript."""
        length = 64 if self.adh2 else 24
        return ConcatKDFHash(self.hash(), length, b"ptkhsm-sms master" + transcript).derive(secret)

    def keys(self, master, transcript, epoch, direction):
        """SP 800-108 counter-mode KDF: (encryption key, MAC key) of one direction and epoch."""
        kdf = KBKDFHMAC(self.hash(), Mode.CounterMode, self.enc_len + self.mac_len, 4, 4,
                        label=b"ptkhsm-sms " + direction, context=transcript + struct.pack(">I", epoch),
                        fixed=None, location=CounterLocation.BeforeFixed)
        out = kdf.derive(master)
        enc = out[:self.enc_len]
        if not self.adh2:
            enc = _des_parity(enc)
        return enc, out[self.enc_len:]

    def transcript_hash(self, *parts):
        digest = hashes.Hash(self.hash())
        for part in parts:
            digest.update(struct.pack(">I", len(part)) + part)
        return digest.finalize()


def _des_parity(key):
    return bytes((b & 0xFE) | (bin(b >> 1).count("1") % 2 == 0) for b in key)


# -- handshake message bodies: length-prefixed fields ------------------------------------
def _fields(*values):
    return b"".join(struct.pack(">I", len(v)) + v for v in values)


def _parse_fields(body, count):
    out, at = [], 0
    for _ in range(count):
        if at + 4 > len(body):
            raise CKRError(C.CKR_SMS_ERROR, "SMS: handshake message cut short")
        (size,) = struct.unpack_from(">I", body, at)
        at += 4
        if at + size > len(body):
            raise CKRError(C.CKR_SMS_ERROR, "SMS: handshake field runs past the message")
        out.append(body[at:at + size])
        at += size
    if at != len(body):
        raise CKRError(C.CKR_SMS_ERROR, "SMS: trailing bytes after a handshake message")
    return out


def fingerprint(identity_spki):
    """SHA-256 of the identity key's SubjectPublicKeyInfo, as hex: what a client pins."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(identity_spki)
    return digest.finalize().hex()


def new_identity():
    """A fresh HSM identity key (ECDSA P-521)."""
    return ec.generate_private_key(ec.SECP521R1())


def spki(identity):
    return identity.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


# -- records -------------------------------------------------------------------------------
def frame(kind, body, protection=0, epoch=0, sequence=0):
    return _HEADER.pack(VERSION, kind, protection, epoch, sequence, len(body)) + body


def _header(record):
    """-> (kind, protection, epoch, sequence) of a record whose framing holds; framing
    errors are SMS errors."""
    if len(record) < HEADER_SIZE:
        raise CKRError(C.CKR_SMS_ERROR, "SMS: record shorter than its header")
    version, kind, protection, epoch, sequence, length = _HEADER.unpack_from(record)
    if version != VERSION:
        raise CKRError(C.CKR_SMS_ERROR, f"SMS: record version {version}, this side speaks {VERSION}")
    if length > MAX_BODY or len(record) != HEADER_SIZE + length:
        raise CKRError(C.CKR_SMS_ERROR, "SMS: record length does not match its header")
    return kind, protection, epoch, sequence


def unframe(record):
    """-> (kind, protection, epoch, sequence, header, body)."""
    return (*_header(record), record[:HEADER_SIZE], record[HEADER_SIZE:])


class _Direction:
    """The keys and sequence number of one direction, and the cipher and MAC objects keyed
    once per epoch (keying them per record cost more than the cryptography itself)."""

    def __init__(self, suite, master, transcript, label):
        self.suite, self.master, self.transcript, self.label = suite, master, transcript, label
        self.tag_len = suite.tag_len
        # Sequence number and keystream position move together: one record at a time, even if
        # a caller ever sealed (or opened) from two threads at once.
        self.lock = threading.Lock()
        self.sequence = 0
        self.epoch = -1
        self.rekey(0)

    def rekey(self, epoch):
        self.epoch = epoch
        self.enc, self.mac = self.suite.keys(self.master, self.transcript, epoch, self.label)
        self._hmac = HMAC(self.mac, self.suite.hash())   # copied per record: the key is set up once
        if self.suite.adh2:
            # AES-256-CTR, one keystream per direction and epoch (a key used for nothing else),
            # counter block from 0, running on across the records in sequence order: the
            # receiver decrypts only records whose MAC and sequence number passed, and any
            # failure ends the channel, so both ends stay at the same place and no keystream
            # byte serves twice. One cipher object per key: ~0.5 us a record, where a cipher
            # made per record costs ~11 us.
            keystream = Cipher(algorithms.AES256(self.enc), modes.CTR(bytes(16))).encryptor()
            self.encrypt = self.decrypt = keystream.update   # CTR: decryption is the same XOR
        else:
            self.encrypt, self.decrypt = self._des_encrypt, self._des_decrypt

    def forget(self):
        self.enc = self.mac = self._hmac = self.encrypt = self.decrypt = None

    def tag(self, data):
        """HMAC (SHA-512 truncated to 256 bits, or SHA-1) of `data` (any buffer)."""
        h = self._hmac.copy()
        h.update(data)
        return h.finalize()[:self.tag_len]

    def _des_encrypt(self, plain):
        iv = os.urandom(8)
        padder = padding.PKCS7(64).padder()
        enc = Cipher(TripleDES(self.enc), modes.CBC(iv)).encryptor()
        return iv + enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()

    def _des_decrypt(self, body):
        if len(body) < 16 or len(body) % 8:
            raise CKRError(C.CKR_SMS_ERROR, "SMS: encrypted body is not whole 3DES blocks")
        dec = Cipher(TripleDES(self.enc), modes.CBC(body[:8])).decryptor()
        padded = dec.update(body[8:]) + dec.finalize()
        unpadder = padding.PKCS7(64).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:  # only reachable after the MAC passed: a bug or a broken peer
            raise CKRError(C.CKR_SMS_ERROR, "SMS: bad padding in an authenticated record") from None


class Channel:
    """One side of an established channel: seals what it sends, opens what it receives.

    `outgoing`/`incoming` are the directions (request or reply) this side sends
    and receives. Any failure to open a record ends the channel: it keeps
    nothing that an attacker's next try could use.
    """

    def __init__(self, suite, master, transcript, sending, receiving, bad_mac_rv):
        self.suite = suite
        self.out = _Direction(suite, master, transcript, sending)
        self.inc = _Direction(suite, master, transcript, receiving)
        self.bad_mac_rv = bad_mac_rv
        self.block = suite.block
        self.blocks = 0          # cipher blocks encrypted and decrypted on this side
        self.rollovers = 0
        self.open = True

    def seal(self, payload, protection, kind=DATA):
        if not self.open:
            raise CKRError(C.CKR_NO_SESSION_KEYS, "SMS: the channel has ended")
        out = self.out
        with out.lock:
            sequence = out.sequence
            out.sequence = sequence + 1
            if protection & ENCRYPTED:
                protection |= SIGNED  # never encryption without integrity
                body = out.encrypt(payload)
                self.blocks += -(-len(payload) // self.block)
            else:
                body = payload
            if not protection & SIGNED:
                return _HEADER.pack(VERSION, kind, protection, out.epoch, sequence, len(body)) + body
            record = _HEADER.pack(VERSION, kind, protection, out.epoch, sequence, len(body) + out.tag_len) + body
            return record + out.tag(record)   # the MAC covers header and (encrypted) body

    def unseal(self, record):
        """-> (kind, protection, payload) of the next record in order. Any failure ends the
        channel."""
        if not self.open:
            raise CKRError(C.CKR_NO_SESSION_KEYS, "SMS: the channel has ended")
        inc = self.inc
        try:
            with inc.lock:
                kind, protection, epoch, sequence = _header(record)
                if protection not in _SAFE:
                    raise CKRError(C.CKR_SMS_ERROR, "SMS: unknown or unsafe protection bits")
                if epoch != inc.epoch:
                    if epoch != inc.epoch + 1:
                        raise CKRError(C.CKR_SMS_ERROR, f"SMS: record of key epoch {epoch}, expected {inc.epoch}")
                    inc.rekey(epoch)   # the sender rolled over: follow it
                if protection & SIGNED:
                    end = len(record) - inc.tag_len
                    if end < HEADER_SIZE:
                        raise CKRError(self.bad_mac_rv, "SMS: record shorter than its MAC")
                    view = memoryview(record)
                    if not hmac.compare_digest(view[end:], inc.tag(view[:end])):
                        raise CKRError(self.bad_mac_rv, "SMS: record MAC does not verify")
                    # an encrypted body is decrypted from the record itself: one copy fewer
                    body = view[HEADER_SIZE:end] if protection & ENCRYPTED else record[HEADER_SIZE:end]
                else:
                    body = record[HEADER_SIZE:]
                # checked after the MAC, so a forged record cannot learn the expected number
                if sequence != inc.sequence:
                    raise CKRError(C.CKR_SMS_ERROR, f"SMS: record {sequence} out of order (expected "
                                                    f"{inc.sequence}): replayed, dropped or reordered")
                inc.sequence = sequence + 1
                if protection & ENCRYPTED:
                    body = inc.decrypt(body)
                    self.blocks += -(-len(body) // self.block)
                if kind == CLOSE:
                    self.end()
                return kind, protection, body
        except CKRError:
            self.end()
            raise

    def roll_over(self):
        """Use the next epoch's keys for what this side sends from now on."""
        self.out.rekey(self.out.epoch + 1)
        self.rollovers += 1
        self.blocks = 0

    def end(self):
        self.open = False
        self.out.forget()
        self.inc.forget()


# -- the client's side of the handshake ----------------------------------------------------
class ClientHandshake:
    """hello() -> HELLO record; finish(ACCEPT record) -> FINISHED record; confirm(FINISHED
    record) -> the client's Channel."""

    def __init__(self, mode=ADH2, pinned=None, blocks=1 << 32, hours=24, clock=time.monotonic):
        self.suite = Suite(mode)
        self.pinned = pinned.lower() if pinned else None
        self.blocks, self.hours, self.clock = blocks, hours, clock
        self._private = self.suite.new_private()
        self._hello = frame(HELLO, _fields(bytes([mode]), os.urandom(NONCE),
                                           self.suite.public_bytes(self._private)))
        self.hsm = None   # what the HSM said of itself, once accepted

    def hello(self):
        return self._hello

    def finish(self, accept):
        kind, _, _, _, _, body = unframe(accept)
        if kind != ACCEPT:
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the HSM did not accept the channel")
        mode, nonce, public, serial, firmware, flags, identity, signature = _parse_fields(body, 8)
        if mode != bytes([self.suite.mode]):
            # A downgrade (asked ADH2, offered ADH) or a confused peer: never follow it.
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the HSM answered in another mode than asked")
        if len(nonce) != NONCE or len(firmware) != 3 or len(flags) != 4:
            raise CKRError(C.CKR_SMS_ERROR, "SMS: malformed ACCEPT")
        if self.pinned is not None and fingerprint(identity) != self.pinned:
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS,
                           f"SMS: HSM identity {fingerprint(identity)} is not the pinned {self.pinned}")
        signed = self._hello + body[:-(4 + len(signature))]
        try:
            key = serialization.load_der_public_key(identity)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC key")
            key.verify(signature, signed, ec.ECDSA(hashes.SHA512()))
        except (ValueError, InvalidSignature):
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the HSM's handshake signature does not verify") from None
        secret = self.suite.exchange(self._private, public)
        self._private = None
        self._transcript = self.suite.transcript_hash(self._hello, accept)
        master = self.suite.master(secret, self._transcript)
        self.channel = Channel(self.suite, master, self._transcript, _TO_HSM, _FROM_HSM,
                               C.CKR_BAD_REPLY_SIGNATURE)
        self.hsm = {"serial": serial.decode(), "firmware": tuple(firmware),
                    "flags": int.from_bytes(flags, "big"), "fingerprint": fingerprint(identity)}
        tag = self.channel.out.tag(b"client finished" + self._transcript)
        return self.channel.seal(tag, SIGNED, FINISHED)

    def confirm(self, finished):
        kind, _, body = self.channel.unseal(finished)
        expected = self.channel.inc.tag(b"server finished" + self._transcript)
        if kind != FINISHED or not hmac.compare_digest(body, expected):
            self.channel.end()
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the HSM did not confirm the keys")
        return ClientChannel(self.channel, self.blocks, self.hours, self.clock)


class ClientChannel:
    """The client's channel: rolls its keys over past the block or hour limit."""

    def __init__(self, channel, blocks, hours, clock):
        self.channel, self.limit_blocks, self.limit_seconds, self.clock = channel, blocks, hours * 3600, clock
        self.roll_at = clock() + self.limit_seconds
        self.unseal = channel.unseal   # nothing to add on receipt: no wrapper call per record

    def seal(self, payload, protection):
        channel = self.channel
        if channel.blocks >= self.limit_blocks or self.clock() >= self.roll_at:
            channel.roll_over()
            self.roll_at = self.clock() + self.limit_seconds
        return channel.seal(payload, protection)

    @property
    def counters(self):
        return {"blocks": self.channel.blocks, "epoch": self.channel.out.epoch,
                "rollovers": self.channel.rollovers, "open": self.channel.open}

    def close(self):
        record = self.channel.seal(b"", SIGNED, CLOSE)
        self.channel.end()
        return record


# -- the HSM's side of the handshake ---------------------------------------------------------
class ServerHandshake:
    """accept(HELLO record) -> ACCEPT record; confirm(FINISHED record) -> (FINISHED record,
    the HSM's Channel)."""

    def __init__(self, identity, serial, firmware, flags, blocks=1 << 32):
        self.identity, self.serial, self.firmware, self.flags = identity, serial, tuple(firmware), flags
        self.blocks = blocks

    def accept(self, hello):
        kind, _, _, _, _, body = unframe(hello)
        if kind != HELLO:
            raise CKRError(C.CKR_SMS_ERROR, "SMS: a channel starts with HELLO")
        mode, nonce, public = _parse_fields(body, 3)
        if len(mode) != 1 or mode[0] not in (ADH, ADH2) or len(nonce) != NONCE:
            raise CKRError(C.CKR_SMS_ERROR, "SMS: malformed HELLO")
        if mode[0] == ADH and self.firmware >= LEGACY_FIRMWARE_BELOW:
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS,
                           "SMS: legacy ADH needs HSM firmware older than 5.01.00; this HSM speaks ADH2 only")
        self.suite = Suite(mode[0])
        private = self.suite.new_private()
        secret = self.suite.exchange(private, public)
        unsigned = _fields(mode, os.urandom(NONCE), self.suite.public_bytes(private), self.serial.encode(),
                           bytes(self.firmware), self.flags.to_bytes(4, "big"), spki(self.identity))
        signature = self.identity.sign(hello + unsigned, ec.ECDSA(hashes.SHA512()))
        accept = frame(ACCEPT, unsigned + _fields(signature))
        self._transcript = self.suite.transcript_hash(hello, accept)
        master = self.suite.master(secret, self._transcript)
        self.channel = Channel(self.suite, master, self._transcript, _FROM_HSM, _TO_HSM,
                               C.CKR_BAD_REQ_SIGNATURE)
        return accept

    def confirm(self, finished):
        kind, _, body = self.channel.unseal(finished)
        expected = self.channel.inc.tag(b"client finished" + self._transcript)
        if kind != FINISHED or not hmac.compare_digest(body, expected):
            self.channel.end()
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, "SMS: the client did not confirm the keys")
        tag = self.channel.out.tag(b"server finished" + self._transcript)
        return self.channel.seal(tag, SIGNED, FINISHED), ServerChannel(self.channel, self.blocks)


class ServerChannel:
    """The HSM's channel: answers in the epoch the client uses, ends a channel whose
    client runs far past the block limit without rolling over."""

    def __init__(self, channel, blocks):
        self.channel, self.limit_blocks = channel, blocks
        self.seal = channel.seal   # the reply is sealed in the epoch unseal() followed

    def unseal(self, record):
        channel = self.channel
        kind, protection, payload = channel.unseal(record)
        if channel.inc.epoch > channel.out.epoch:
            channel.out.rekey(channel.inc.epoch)
            channel.blocks = 0
        elif channel.blocks > 2 * self.limit_blocks:
            channel.end()
            raise CKRError(C.CKR_KEY_ROLLOVER, "SMS: the client did not roll its keys over")
        return kind, protection, payload
