"""Read a layer's tar stream once, front to back, with few Python-level copies.

:class:`TarStream` yields the members of a tar stream as
:class:`tarfile.TarInfo` objects, parsed by :meth:`tarfile.TarInfo.fromtarfile`
(ustar, GNU and PAX headers, exactly as ``tarfile.open(mode="r|")`` parses
them, with the same end-of-archive and error rules as ``TarFile.next``), and
copies a regular member's data straight from its buffer to a file descriptor
(:meth:`TarStream.copy_to`). It stands in for ``tarfile``'s ``_Stream``,
which reads its source in 10 KiB pieces and copies its buffer on every read.

:class:`GzipReader` decompresses gzip members as :class:`gzip.GzipFile` does
(the same header, trailer and zero-padding rules and errors), with larger
reads.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["GzipReader", "TarStream"]

_IN_CHUNK = 256 << 10  # compressed bytes read at a time
_OUT_CHUNK = 1 << 20  # uncompressed bytes asked for at a time
_BLOCK = tarfile.BLOCKSIZE
# tarfile's header errors, which TarFile.next tells apart (not in typeshed)
_EOFHeaderError: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EmptyHeaderError: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_InvalidHeaderError: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]
_TruncatedHeaderError: type[Exception] = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]
_SubsequentHeaderError: type[Exception] = tarfile.SubsequentHeaderError  # type: ignore[attr-defined]


class TarStream:
    """The members of the tar stream read from ``source`` (``read(size)`` -> bytes).

    Also the ``fileobj`` and ``tarfile`` arguments that :mod:`tarfile`'s
    member parsing expects (``read``, ``tell``, forward ``seek``; ``offset``,
    ``pax_headers``, ``encoding``, ``errors``). Iterate once; after each
    member, its data may be read with :meth:`copy_to` or :meth:`extractfile`
    before the next one is asked for.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self._buf = b""
        self._off = 0  # read position in _buf
        self._pos = 0  # stream position of _buf[_off]
        self._eof = False
        # what TarInfo.fromtarfile and _proc_member use of a TarFile:
        self.fileobj = self
        self.offset = 0
        self.pax_headers: dict[str, str] = {}
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.tarinfo = tarfile.TarInfo

    # -- file object ---------------------------------------------------------------

    def _fill(self) -> bool:
        """Make more bytes available in ``_buf``; False at the end of the source."""
        if self._eof:
            return False
        data = self._source.read(_OUT_CHUNK)
        if not data:
            self._eof = True
            return False
        rest = len(self._buf) - self._off
        self._buf = self._buf[self._off :] + data if rest else data
        self._off = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf[self._off :]]
            while self._fill():
                parts.append(self._buf)
                self._off = len(self._buf)
            data = b"".join(parts)
            self._buf, self._off = b"", 0
            self._pos += len(data)
            return data
        while len(self._buf) - self._off < size and self._fill():
            pass
        data = self._buf[self._off : self._off + size]
        self._off += len(data)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        """Forward only (as ``tarfile``'s ``_Stream``): skip to ``pos``, or to the end."""
        if whence != io.SEEK_SET or pos < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        self.skip(pos - self._pos)
        return self._pos

    def skip(self, size: int) -> int:
        """Drop up to ``size`` bytes; returns how many were dropped."""
        done = 0
        while done < size:
            have = len(self._buf) - self._off
            if not have and not self._fill():
                break
            have = len(self._buf) - self._off
            take = min(have, size - done)
            self._off += take
            self._pos += take
            done += take
        return done

    # -- members -------------------------------------------------------------------

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            member = self.next()
            if member is None:
                return
            yield member

    def next(self) -> tarfile.TarInfo | None:
        """The next member, or None at the end; as ``TarFile.next`` of a stream."""
        if self.offset != self._pos:
            if self.offset == 0:
                return None
            self.seek(self.offset - 1)
            if not self.read(1):
                raise tarfile.ReadError("unexpected end of data")
        try:
            buf = self.read(_BLOCK)  # tarfile.TarInfo.fromtarfile, with a faster frombuf
            member = _frombuf(buf, self.encoding, self.errors)
            member.offset = self._pos - _BLOCK
            return member._proc_member(self)  # type: ignore[attr-defined]
        except _EOFHeaderError:
            pass
        except _EmptyHeaderError:
            if self.offset == 0:
                raise tarfile.ReadError("empty file") from None
        except (_InvalidHeaderError, _TruncatedHeaderError) as exc:
            if self.offset == 0:
                raise tarfile.ReadError(str(exc)) from None
        except _SubsequentHeaderError as exc:
            raise tarfile.ReadError(str(exc)) from None
        except zlib.error as exc:
            raise tarfile.ReadError(f"zlib error: {exc}") from None
        return None

    def extractfile(self, member: tarfile.TarInfo) -> io.BufferedReader:
        """A reader of ``member``'s data (sparse maps included), as ``TarFile.extractfile``."""
        return tarfile.ExFileObject(self, member)  # type: ignore[arg-type]

    def copy_to(self, member: tarfile.TarInfo, fd: int) -> None:
        """Write the data of regular ``member`` (the current one) to ``fd``."""
        if member.sparse is not None:
            data = self.extractfile(member)
            while chunk := data.read(_OUT_CHUNK):
                _write_all(fd, chunk)
            return
        if member.size and self._pos != member.offset_data:
            self.seek(member.offset_data)
        left = member.size
        while left:
            have = len(self._buf) - self._off
            if not have:
                if not self._fill():
                    raise tarfile.ReadError("unexpected end of data")
                have = len(self._buf)
            take = min(have, left)
            with memoryview(self._buf) as view:
                _write_all(fd, view[self._off : self._off + take])
            self._off += take
            self._pos += take
            left -= take


_ZEROS = bytes(_BLOCK)
_OCTAL = b"01234567"
_GNU_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.GNUTYPE_SPARSE)


class _Slow(Exception):
    """The header needs ``tarfile.TarInfo.frombuf`` itself."""


def _nti(field: bytes) -> int:
    """``tarfile.nti`` for plain octal fields (NUL-terminated, space-padded); else _Slow."""
    end = field.find(b"\0")
    if end >= 0:
        field = field[:end]
    field = field.strip(b" ")
    if field.translate(None, _OCTAL):
        raise _Slow
    return int(field, 8) if field else 0


def _nts(field: bytes, encoding: str, errors: str) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode(encoding, errors)


def _frombuf(buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
    """``tarfile.TarInfo.frombuf(buf, encoding, errors)``: the same TarInfo (or
    error); ustar headers with octal numbers and an unsigned checksum parsed here,
    anything else (base-256 numbers, GNU sparse, signed checksums, errors) by tarfile."""
    if len(buf) != _BLOCK or buf == _ZEROS:
        return tarfile.TarInfo.frombuf(buf, encoding, errors)
    try:
        chksum = _nti(buf[148:156])
        if chksum != 256 + sum(buf) - sum(buf[148:156]):
            raise _Slow
        kind = buf[156:157]
        if kind == tarfile.GNUTYPE_SPARSE:
            raise _Slow
        obj = tarfile.TarInfo()
        obj.name = _nts(buf[0:100], encoding, errors)
        obj.mode = _nti(buf[100:108])
        obj.uid = _nti(buf[108:116])
        obj.gid = _nti(buf[116:124])
        obj.size = _nti(buf[124:136])
        obj.mtime = _nti(buf[136:148])
        obj.chksum = chksum
        obj.type = kind
        obj.linkname = _nts(buf[157:257], encoding, errors)
        obj.uname = _nts(buf[265:297], encoding, errors)
        obj.gname = _nts(buf[297:329], encoding, errors)
        obj.devmajor = _nti(buf[329:337])
        obj.devminor = _nti(buf[337:345])
        prefix = _nts(buf[345:500], encoding, errors)
    except (_Slow, UnicodeError):
        return tarfile.TarInfo.frombuf(buf, encoding, errors)
    if kind == tarfile.AREGTYPE and obj.name.endswith("/"):
        obj.type = tarfile.DIRTYPE
    if obj.type == tarfile.DIRTYPE:
        obj.name = obj.name.rstrip("/")
    if prefix and obj.type not in _GNU_TYPES:
        obj.name = prefix + "/" + obj.name
    return obj


def _write_all(fd: int, data: Any) -> None:
    with memoryview(data) as view:
        while view:
            written = os.write(fd, view)
            view = view[written:]


class GzipReader:
    """The uncompressed bytes of the gzip members read from ``raw``, as
    :class:`gzip.GzipFile` reads them: every member's header is checked (magic,
    method 8; flags as GzipFile, the header CRC unchecked), its CRC-32 and length
    verified, zero padding between and after members skipped; raises
    :class:`gzip.BadGzipFile` and :class:`EOFError` as GzipFile does."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._pending = b""  # compressed bytes read but not consumed
        self._decomp: Any = None  # of the current member, None between members
        self._crc = 0
        self._size = 0
        self._done = False

    def _get(self, size: int) -> bytes:
        """Up to ``size`` raw bytes (fewer only at EOF)."""
        while len(self._pending) < size:
            chunk = self._raw.read(max(_IN_CHUNK, size - len(self._pending)))
            if not chunk:
                break
            self._pending += chunk
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _exact(self, size: int) -> bytes:
        data = self._get(size)
        if len(data) < size:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        return data

    def _header(self) -> bool:
        """Read a member header (gzip ``_read_gzip_header``); False at EOF."""
        import gzip

        magic = self._get(2)
        if magic == b"":
            return False
        if magic != b"\037\213":
            raise gzip.BadGzipFile(f"Not a gzipped file ({magic!r})")
        method, flag, _mtime = struct.unpack("<BBIxx", self._exact(8))
        if method != 8:
            raise gzip.BadGzipFile("Unknown compression method")
        if flag & gzip.FEXTRA:
            (extra,) = struct.unpack("<H", self._exact(2))
            self._exact(extra)
        for bit in (gzip.FNAME, gzip.FCOMMENT):
            if flag & bit:
                while self._exact(1) != b"\0":
                    pass
        if flag & gzip.FHCRC:
            self._exact(2)
        return True

    def _trailer(self) -> None:
        """Check CRC-32 and size (gzip ``_read_eof``), then skip zero padding."""
        import gzip

        crc, isize = struct.unpack("<II", self._exact(8))
        if crc != self._crc:
            raise gzip.BadGzipFile(f"CRC check failed {hex(crc)} != {hex(self._crc)}")
        if isize != (self._size & 0xFFFFFFFF):
            raise gzip.BadGzipFile("Incorrect length of data produced")
        while True:
            if not self._pending:
                chunk = self._raw.read(_IN_CHUNK)
                if not chunk:
                    return
                self._pending = chunk
            stripped = self._pending.lstrip(b"\0")
            if stripped:
                self._pending = stripped
                return
            self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _OUT_CHUNK
        if size == 0 or self._done:
            return b""
        while True:
            if self._decomp is None:
                if not self._header():
                    self._done = True
                    return b""
                self._decomp = zlib.decompressobj(-zlib.MAX_WBITS)
                self._crc = self._size = 0
            decomp = self._decomp
            if decomp.unconsumed_tail:
                data = decomp.decompress(decomp.unconsumed_tail, size)
            else:
                chunk = self._pending or self._raw.read(_IN_CHUNK)
                self._pending = b""
                if not chunk and not decomp.eof:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
                data = decomp.decompress(chunk, size)
            if decomp.eof:  # the rest is in unused_data (unconsumed_tail may repeat it)
                self._pending = decomp.unused_data + self._pending
            if data:
                self._crc = zlib.crc32(data, self._crc)
                self._size += len(data)
            if decomp.eof:
                self._trailer()
                self._decomp = None
            if data:
                return data
