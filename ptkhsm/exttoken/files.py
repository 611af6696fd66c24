"""The ExtToken files on the host: two ODS logs and the ORT checkpoint.

The format is in docs/exttoken.md. In short: each ODS (one for public objects,
one for private ones, as PTK-C keeps them apart) is an append-only log of
checksummed records, PUT (object id, fast-find attributes, cryptogram) or DEL
(object id); the last record of an id wins. The ODS is the truth: a record is
committed once it is appended and fsync()ed. The ORT is a checkpoint of the
index (id -> record, fast-find attributes) and of the master keys' KVCs, so
that opening does not replay the whole log; it is replaced atomically (write,
fsync, rename) and ignored when it does not match the logs.

Several processes share the files: writers hold an exclusive flock() on
`<name>.lock`; readers take no lock and replay what was appended since they
last looked (a log that grew, or was replaced by a compaction, is the
generation check: one os.stat() per look). A torn record at the end of a log
(a writer killed mid-append) is invisible to readers and cut off by the next
writer; a damaged record inside a log is reported and skipped, never cut.
"""

import fcntl
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field

from .. import constants as C
from .. import schema
from ..errors import CKRError
from ..log import logger

PUBLIC, PRIVATE = 0, 1
KIND_NAMES = ("public", "private")
VERSION = 1

_ODS_MAGIC = b"PTKCODS1"
_ORT_MAGIC = b"PTKCORT1"
# magic, version, kind, epoch, mechanism, next object id, kvc length, kvc (padded)
_ODS_HEADER = struct.Struct(">8sII16sQQB15s")
_ODS_HEADER_SIZE = _ODS_HEADER.size + 4            # + crc32
_REC_MAGIC = b"REC1"
PUT, DEL = 1, 2
# magic, op, object id, meta length, data length, crc32 of these
_REC_HEAD = struct.Struct(">4sBxxxQII")
_REC_HEAD_SIZE = _REC_HEAD.size + 4
_CRC = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# ORT entry: object id, kind, offset, record length, meta length
_ORT_ENTRY = struct.Struct(">QBQII")
_ORT_LOG = struct.Struct(">16sQ")                  # per log: epoch, end offset covered

FAST = (C.CKA_CLASS, C.CKA_KEY_TYPE, C.CKA_LABEL, C.CKA_PRIVATE, C.CKA_ID)


class FilesError(CKRError):
    """The files cannot be used (another token's, or damaged beyond a torn tail)."""

    def __init__(self, reason):
        super().__init__(C.CKR_DEVICE_ERROR, reason)


@dataclass
class Entry:
    """One live object: where its latest record is and its fast-find attributes."""
    oid: int
    kind: int
    offset: int
    length: int                  # of the whole record
    meta: dict = field(default_factory=dict)
    damaged: bool = False        # its record failed the checksum: never loaded


def _crc(data):
    return _CRC.pack(zlib.crc32(data))


def _encode_meta(meta):
    return schema.encode_template(tuple(sorted(meta.items())))


def _decode_meta(raw):
    return dict(schema.decode_template(raw))


def encode_record(op, oid, meta=None, data=b""):
    raw_meta = _encode_meta(meta) if op == PUT else b""
    head = _REC_HEAD.pack(_REC_MAGIC, op, oid, len(raw_meta), len(data))
    body = raw_meta + data
    return head + _crc(head) + body + _crc(head + body)


def _parse_header(raw):
    if len(raw) < _ODS_HEADER_SIZE or raw[_ODS_HEADER.size:_ODS_HEADER_SIZE] != _crc(raw[:_ODS_HEADER.size]):
        return None
    magic, version, kind, epoch, mech, next_oid, kvc_len, kvc = _ODS_HEADER.unpack(raw[:_ODS_HEADER.size])
    if magic != _ODS_MAGIC or kvc_len > 15:
        return None
    if version != VERSION:
        raise FilesError(f"ODS format version {version} is not supported (this library writes {VERSION})")
    return {"kind": kind, "epoch": epoch, "mechanism": mech, "next_oid": next_oid, "kvc": kvc[:kvc_len]}


def _header(kind, epoch, mechanism, next_oid, kvc):
    raw = _ODS_HEADER.pack(_ODS_MAGIC, VERSION, kind, epoch, mechanism, next_oid, len(kvc), kvc)
    return raw + _crc(raw)


def _fsync_dir(path):
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Log:
    """One ODS file, as this process last read it."""

    def __init__(self, path, kind):
        self.path, self.kind = path, kind
        self.fd = None
        self.ino = None
        self.header = None
        self.end = 0           # end of the last whole record read
        self.bad_at = None     # offset of damage that is not a torn tail

    def exists(self):
        return os.path.exists(self.path)

    def open(self):
        """(Re)open the file; False if it does not exist (yet)."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        self.fd, self.ino = fd, os.fstat(fd).st_ino
        self.header = _parse_header(os.pread(fd, _ODS_HEADER_SIZE, 0))
        if self.header is None:
            if os.fstat(fd).st_size < _ODS_HEADER_SIZE:     # created, header not yet written
                self.close()
                return False
            raise FilesError(f"{self.path}: not an ODS file (bad header)")
        if self.header["kind"] != self.kind:
            raise FilesError(f"{self.path}: holds {KIND_NAMES[self.header['kind']]} objects")
        self.end, self.bad_at = _ODS_HEADER_SIZE, None
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
        self.fd = self.ino = self.header = None
        self.end = 0

    def size(self):
        return os.fstat(self.fd).st_size

    def records(self, start):
        """Yield (offset, op, oid, meta, data, ok) from `start`, stopping before a torn tail."""
        size = self.size()
        pos = start
        while pos + _REC_HEAD_SIZE <= size:
            head = os.pread(self.fd, _REC_HEAD_SIZE, pos)
            magic, op, oid, meta_len, data_len = _REC_HEAD.unpack(head[:_REC_HEAD.size])
            if magic != _REC_MAGIC or head[_REC_HEAD.size:] != _crc(head[:_REC_HEAD.size]) or op not in (PUT, DEL):
                if _REC_MAGIC not in os.pread(self.fd, min(size - pos, 1 << 20), pos)[1:]:
                    return                                  # torn or zero-filled tail
                self.bad_at = pos
                logger.error("ExtToken: %s is damaged at offset %d; records after it are ignored", self.path, pos)
                return
            total = _REC_HEAD_SIZE + meta_len + data_len + 4
            if pos + total > size:
                return                                      # torn tail (or still being written)
            body = os.pread(self.fd, meta_len + data_len + 4, pos + _REC_HEAD_SIZE)
            ok = body[-4:] == _crc(head[:_REC_HEAD.size] + body[:-4])
            if not ok and pos + total == size:
                return                                      # torn last record
            meta = None
            if ok and op == PUT:
                try:
                    meta = _decode_meta(body[:meta_len])
                except ValueError:
                    ok = False
            if not ok:
                logger.error("ExtToken: %s: record of object %d at offset %d fails its checksum", self.path, oid, pos)
            yield pos, op, oid, meta, total, ok
            pos += total

    def read(self, entry):
        """The cryptogram of an entry's record, checked again (the file may have been changed)."""
        raw = os.pread(self.fd, entry.length, entry.offset)
        head = raw[:_REC_HEAD.size]
        if len(raw) != entry.length or raw[-4:] != _crc(head + raw[_REC_HEAD_SIZE:-4]):
            return None
        _, _, oid, meta_len, data_len = _REC_HEAD.unpack(head)
        if oid != entry.oid:
            return None
        return raw[_REC_HEAD_SIZE + meta_len:_REC_HEAD_SIZE + meta_len + data_len]


class Files:
    """The ODS/ORT pair of one external token: an index kept fresh, and its writes."""

    def __init__(self, directory, name):
        self.directory = directory
        self.base = os.path.join(directory, name)
        self.logs = (Log(self.base + ".public.ods", PUBLIC), Log(self.base + ".private.ods", PRIVATE))
        self.ort_path = self.base + ".ort"
        self._reset()
        self._thread_lock = threading.RLock()
        self._lock_fd = None
        self._loaded = False

    # -- reading ---------------------------------------------------------------
    def refresh(self):
        """Bring the index up to date with the files (cheap when nothing changed)."""
        with self._thread_lock:
            if not self._loaded:
                self._load()
            else:
                self._catch_up(self.logs)

    def _catch_up(self, logs):
        """One os.stat per log: one replaced (compaction) reloads everything, one grown is
        replayed from where it was read to."""
        sizes = []
        for log in logs:
            size = self._size(log)
            if size is None:
                self._load()
                return
            sizes.append(size)
        for log, size in zip(logs, sizes):
            if log.fd is not None and log.bad_at is None and size > log.end:
                self._replay(log, log.end)

    @staticmethod
    def _size(log):
        """The size of the log at its path, or None if the path is another file now."""
        try:
            st = os.stat(log.path)
        except FileNotFoundError:
            return None if log.ino is not None else 0
        return st.st_size if st.st_ino == log.ino else None

    def entry(self, oid):
        """The index entry of an object, up to date with the files, or None.

        All the records of an object are in one log (its kind: CKA_PRIVATE cannot change, and
        put() refuses to move an object), so only that log needs the generation check: one
        os.stat per use instead of one per log. An id the index does not hold may be in either."""
        with self._thread_lock:
            entry = self.index.get(oid) if self._loaded else None
            if entry is None:
                self.refresh()
                return self.index.get(oid)
            self._catch_up((self.logs[entry.kind],))
            return self.index.get(oid)

    def _reset(self):
        self.index = {}            # oid -> Entry
        self.by_label, self.by_id = {}, {}
        self.live = 0              # bytes of the records the index points at (kept, not summed per write)
        self.max_oid = 0
        self.garbage = [0, 0]      # bytes of superseded records, per log
        self.since_checkpoint = 0  # bytes appended since the ORT was written

    def _load(self):
        self._reset()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for log in self.logs:
            log.open()
        self._loaded = True
        starts = self._read_ort()
        for log in self.logs:
            if log.fd is not None:
                self.max_oid = max(self.max_oid, log.header["next_oid"] - 1)
                log.end = starts.get(log.kind, _ODS_HEADER_SIZE)   # what the ORT covers is read
                self._replay(log, log.end)

    def _read_ort(self):
        """Index entries from the ORT if it matches the logs -> {kind: offset to replay from}."""
        try:
            with open(self.ort_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            return self._parse_ort(raw)
        except (struct.error, ValueError, KeyError) as exc:
            logger.warning("ExtToken: %s ignored (%s); replaying the ODS", self.ort_path, exc)
            self._reset()
            return {}

    def _parse_ort(self, raw):
        if raw[:8] != _ORT_MAGIC or raw[-4:] != _crc(raw[:-4]):
            raise ValueError("bad magic or checksum")
        (version,) = struct.unpack_from(">I", raw, 8)
        if version != VERSION:
            raise ValueError(f"version {version}")
        pos, starts = 12, {}
        for log in self.logs:
            epoch, end = _ORT_LOG.unpack_from(raw, pos)
            kvc_len = raw[pos + _ORT_LOG.size]
            pos += _ORT_LOG.size + 1 + kvc_len
            if log.fd is None:
                if end:
                    raise ValueError(f"{log.path} is missing")
                continue
            if epoch != log.header["epoch"] or end > log.size():
                raise ValueError(f"does not match {log.path}")
            starts[log.kind] = end
        garbage_pub, garbage_prv, max_oid, count = struct.unpack_from(">QQQQ", raw, pos)
        pos += 32
        for _ in range(count):
            oid, kind, offset, length, meta_len = _ORT_ENTRY.unpack_from(raw, pos)
            pos += _ORT_ENTRY.size
            meta = _decode_meta(raw[pos:pos + meta_len])
            pos += meta_len
            self._put(Entry(oid, kind, offset, length, meta))
        self.garbage, self.max_oid = [garbage_pub, garbage_prv], max_oid
        return starts

    def _replay(self, log, start):
        for offset, op, oid, meta, length, ok in log.records(start):
            self.max_oid = max(self.max_oid, oid)
            old = self.index.get(oid)
            if old is not None:
                self._drop(old)
                self.garbage[old.kind] += old.length
            if op == DEL:
                self.garbage[log.kind] += length
            else:
                self._put(Entry(oid, log.kind, offset, length, meta or {}, damaged=not ok))
            log.end = offset + length
            self.since_checkpoint += length

    def _put(self, entry):
        self.index[entry.oid] = entry
        self.live += entry.length
        for table, attr in ((self.by_label, C.CKA_LABEL), (self.by_id, C.CKA_ID)):
            if attr in entry.meta:
                table.setdefault(entry.meta[attr], set()).add(entry.oid)

    def _drop(self, entry):
        del self.index[entry.oid]
        self.live -= entry.length
        for table, attr in ((self.by_label, C.CKA_LABEL), (self.by_id, C.CKA_ID)):
            bucket = table.get(entry.meta.get(attr))
            if bucket is not None:
                bucket.discard(entry.oid)
                if not bucket:
                    del table[entry.meta[attr]]

    def candidates(self, template):
        """Object ids that can match a template: one index bucket if it names a label or ID."""
        for attr, table in ((C.CKA_LABEL, self.by_label), (C.CKA_ID, self.by_id)):
            if attr in template:
                return list(table.get(template[attr], ()))
        return list(self.index)

    def cryptogram(self, entry):
        data = self.logs[entry.kind].read(entry)
        if data is None:
            raise FilesError(f"ExtToken object {entry.oid}: its record in {self.logs[entry.kind].path} is damaged")
        return data

    def kvc(self, kind):
        log = self.logs[kind]
        return None if log.header is None else log.header["kvc"]

    # -- writing ---------------------------------------------------------------
    def _writer(self):
        """Context: the exclusive lock, with the index refreshed under it."""
        files = self

        class Writer:
            def __enter__(self):
                files._thread_lock.acquire()
                try:
                    if files._lock_fd is None:
                        os.makedirs(files.directory, mode=0o700, exist_ok=True)
                        files._lock_fd = os.open(files.base + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(files._lock_fd, fcntl.LOCK_EX)
                except BaseException:
                    files._thread_lock.release()
                    raise
                try:
                    files.refresh()
                except BaseException:
                    self.__exit__(None, None, None)
                    raise
                return files

            def __exit__(self, *exc):
                fcntl.flock(files._lock_fd, fcntl.LOCK_UN)
                files._thread_lock.release()
        return Writer()

    def ensure_log(self, kind, mechanism, kvc):
        """Create a log if missing; a log made for another master key is a clear error."""
        log = self.logs[kind]
        with self._writer():
            if log.fd is None:
                tmp = log.path + ".new"
                self._write_file(tmp, _header(kind, os.urandom(16), mechanism, self.max_oid + 1, kvc))
                os.rename(tmp, log.path)
                _fsync_dir(log.path)
                log.open()
        if log.header["kvc"] != kvc:
            raise CKRError(C.CKR_TOKEN_NOT_RECOGNIZED,
                           f"ExtToken files {log.path} belong to another token: the {KIND_NAMES[kind]} "
                           "master key's KVC does not match")
        return log.header["mechanism"]

    @staticmethod
    def _write_file(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, log, record):
        if log.bad_at is not None:
            raise FilesError(f"{log.path} is damaged at offset {log.bad_at}: run `ctkmu compact` after a check")
        if log.size() != log.end:
            os.ftruncate(log.fd, log.end)   # a torn record of a writer that died (we hold the lock)
        os.pwrite(log.fd, record, log.end)
        os.fsync(log.fd)
        self._replay(log, log.end)

    def put(self, oid, kind, meta, cryptogram):
        """Store (or replace) an object -> its id. Returns once the record is durable."""
        with self._writer():
            if oid is None:
                oid = self.max_oid + 1
            elif oid not in self.index:
                raise CKRError(C.CKR_OBJECT_HANDLE_INVALID, f"ExtToken object {oid} was destroyed")
            elif self.index[oid].kind != kind:   # entry() checks only the log of an object's kind
                raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"ExtToken object {oid} cannot change its CKA_PRIVATE")
            self._append(self.logs[kind], encode_record(PUT, oid, meta, cryptogram))
            self._maintain()
            return oid

    def delete(self, oid):
        with self._writer():
            entry = self.index.get(oid)
            if entry is None:
                raise CKRError(C.CKR_OBJECT_HANDLE_INVALID, f"ExtToken object {oid} was destroyed")
            self._append(self.logs[entry.kind], encode_record(DEL, oid))
            self._maintain()

    # -- checkpoint and compaction ---------------------------------------------------
    compact_bytes = 4 << 20     # automatic compaction once this much is garbage (and half the file)

    def _maintain(self):
        if sum(self.garbage) >= max(self.compact_bytes, self.live):
            self._compact()
        elif self.since_checkpoint >= max(256 << 10, self.live // 4):
            self._checkpoint()

    def _checkpoint(self):
        parts = [_ORT_MAGIC, struct.pack(">I", VERSION)]
        for log in self.logs:
            kvc = b"" if log.header is None else log.header["kvc"]
            epoch = b"\0" * 16 if log.header is None else log.header["epoch"]
            parts.append(_ORT_LOG.pack(epoch, log.end if log.fd is not None else 0) + bytes([len(kvc)]) + kvc)
        parts.append(struct.pack(">QQQQ", self.garbage[0], self.garbage[1], self.max_oid, len(self.index)))
        for entry in self.index.values():
            meta = _encode_meta(entry.meta)
            parts.append(_ORT_ENTRY.pack(entry.oid, entry.kind, entry.offset, entry.length, len(meta)) + meta)
        raw = b"".join(parts)
        tmp = self.ort_path + ".new"
        self._write_file(tmp, raw + _crc(raw))
        os.rename(tmp, self.ort_path)
        _fsync_dir(self.ort_path)
        self.since_checkpoint = 0

    def compact(self, progress=None):
        """Rewrite both logs with only their live records -> bytes reclaimed."""
        with self._writer():
            return self._compact(progress)

    def _compact(self, progress=None):
        before = sum(log.size() for log in self.logs if log.fd is not None)
        done = 0
        for log in self.logs:
            if log.fd is None:
                continue
            if log.bad_at is not None:
                raise FilesError(f"{log.path} is damaged at offset {log.bad_at}: not compacting over it")
            live = sorted((e for e in self.index.values() if e.kind == log.kind), key=lambda e: e.offset)
            header = dict(log.header)
            tmp = log.path + ".new"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, _header(log.kind, os.urandom(16), header["mechanism"], self.max_oid + 1, header["kvc"]))
                for entry in live:
                    os.write(fd, os.pread(log.fd, entry.length, entry.offset))
                    done += 1
                    if progress:
                        progress(done, len(self.index))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, log.path)
            _fsync_dir(log.path)
        self._load()
        self._checkpoint()
        return before - sum(log.size() for log in self.logs if log.fd is not None)

    def paths(self):
        return [log.path for log in self.logs] + [self.ort_path, self.base + ".lock"]

    def snapshot(self, progress=None):
        """{file name: content} of the logs and the ORT, copied with no writer in between."""
        with self._writer():
            self._checkpoint()
            out = {}
            paths = [log.path for log in self.logs] + [self.ort_path]
            for n, path in enumerate(paths, 1):
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        out[os.path.basename(path)] = f.read()
                if progress:
                    progress(n, len(paths))
            return out

    def close(self):
        for log in self.logs:
            log.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._loaded = False
