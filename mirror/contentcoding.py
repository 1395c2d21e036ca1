"""Content-Encoding, decoded strictly: a body decodes to the proper end of every coding, or not at all. Pure.

urllib3 decodes leniently, and each of its leniencies would store a false version: a gzip
stream cut short (with a Content-Length that matches the cut) gives what inflated so far,
garbage after a gzip member is dropped, a coding it does not know passes through undecoded,
and a brotli or deflate stream that never ends gives what it gave. Here:

- `accept_encoding()` names exactly the codings `decoder()` can decode (`br` only when
  the brotli module, 1.2 or later, is there); fetch sends it as Accept-Encoding.
- `decoder(content_encoding)` returns a `Decoder` for a Content-Encoding value; a list
  (codings in the order they were applied) is decoded last coding first.
- `Decoder.feed(data)` yields the decoded bytes in pieces of at most `piece` bytes, so a
  caller that counts them stops a decompression bomb before it is inflated in memory.
- `Decoder.finish()` checks that every coding has ended, with nothing after its end
  (several gzip members, one after the other, are one gzip body: RFC 1952 2.2).

Errors: `EncodingError` (a `ValueError`), whose message names the coding and the problem.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Protocol

try:
    import brotli
except ImportError:  # pragma: no cover - brotli comes with resiliparse's fastwarc
    brotli = None

PIECE = 64 * 1024
MAX_CODINGS = 3  # "gzip, gzip, gzip" is already odd; a longer chain is an attack on our CPU


def _brotli_usable() -> bool:
    """Return True when brotli can tell a stream's end and bound its output (Brotli 1.2)."""
    if brotli is None:
        return False
    try:
        decompressor = brotli.Decompressor()
        decompressor.process(b"", output_buffer_limit=1)
        return hasattr(decompressor, "is_finished")
    except TypeError:
        return False


_BROTLI = _brotli_usable()
_IDENTITY = frozenset({"", "identity"})


class EncodingError(ValueError):
    """The body is not in its Content-Encoding, or in one we cannot decode."""


class _Coding(Protocol):
    name: str

    def feed(self, data: bytes, piece: int) -> Iterator[bytes]: ...

    def finish(self) -> None: ...


class Decoder:
    """Decodes one body, coding by coding, the last applied first."""

    def __init__(self, codings: list[_Coding]) -> None:
        self._codings = codings

    @property
    def codings(self) -> int:
        """Return how many codings the body is in (0: as it is)."""
        return len(self._codings)

    def feed(self, data: bytes, piece: int = PIECE) -> Iterator[bytes]:
        """Yield the decoded bytes of `data`, at most `piece` bytes at a time.

        Raises:
            EncodingError: the bytes are not in the coding they claim.
        """
        return self._through(0, data, piece)

    def finish(self) -> None:
        """Check that the body ended where each coding ends.

        Raises:
            EncodingError: a coding was cut short.
        """
        for coding in self._codings:
            coding.finish()

    def _through(self, index: int, data: bytes, piece: int) -> Iterator[bytes]:
        if index == len(self._codings):
            if data:
                yield data
            return
        for part in self._codings[index].feed(data, piece):
            yield from self._through(index + 1, part, piece)


def decoder(content_encoding: str) -> Decoder:
    """Return the decoder of a body sent with this Content-Encoding ("" or "identity": none).

    Raises:
        EncodingError: a coding we cannot decode, or too many of them.
    """
    names = [n.strip().lower() for n in content_encoding.split(",")]
    names = [n for n in names if n not in _IDENTITY]
    if len(names) > MAX_CODINGS:
        raise EncodingError(f"{content_encoding!r}: more than {MAX_CODINGS} codings")
    return Decoder([_coding(name) for name in reversed(names)])


def _coding(name: str) -> _Coding:
    if name in ("gzip", "x-gzip"):
        return _Gzip(name)
    if name == "deflate":
        return _Deflate(name)
    if name == "br" and _BROTLI:
        return _Brotli(name)
    raise EncodingError(f"{name!r}: a coding we cannot decode (we ask for {accept_encoding()})")


def accept_encoding() -> str:
    """Return the Accept-Encoding value that names what `decoder()` decodes."""
    return "gzip, deflate, br" if _BROTLI else "gzip, deflate"


def _inflate(obj: Any, name: str, data: bytes, piece: int) -> Iterator[bytes]:
    """Yield what a zlib decompressor makes of `data`, `piece` bytes at most at a time."""
    while data:
        try:
            out = obj.decompress(data, piece)
        except zlib.error as exc:
            raise EncodingError(f"{name}: broken data ({exc})") from None
        data = obj.unconsumed_tail
        if out:
            yield out


class _Gzip:
    def __init__(self, name: str) -> None:
        self.name = name
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        while data:
            yield from _inflate(self._obj, self.name, data, piece)
            data = b""
            if self._obj.eof and self._obj.unused_data:
                # Bytes after a member: another member, or garbage that fails its header check.
                data = self._obj.unused_data
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> None:
        if not self._obj.eof:
            raise EncodingError(f"{self.name}: the body ends inside the compressed stream (cut short)")


class _Deflate:
    """HTTP's "deflate" is the zlib format; some old servers send raw deflate, as browsers accept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._head = b""
        self._obj: Any = None

    def feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            cmf, flg = data[0], data[1]
            zlib_header = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        if self._obj.eof and data:
            raise EncodingError(f"{self.name}: data after the end of the compressed stream")
        yield from _inflate(self._obj, self.name, data, piece)
        if self._obj.eof and self._obj.unused_data:
            raise EncodingError(f"{self.name}: data after the end of the compressed stream")

    def finish(self) -> None:
        if self._obj is None or not self._obj.eof:
            raise EncodingError(f"{self.name}: the body ends inside the compressed stream (cut short)")


class _Brotli:
    def __init__(self, name: str) -> None:
        self.name = name
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        try:
            out = self._obj.process(data, output_buffer_limit=piece)
            while out:
                yield out
                if self._obj.is_finished():
                    return
                out = self._obj.process(b"", output_buffer_limit=piece)
        except brotli.error as exc:  # also data after the end of the stream
            raise EncodingError(f"{self.name}: broken data ({exc})") from None

    def finish(self) -> None:
        if not self._obj.is_finished():
            raise EncodingError(f"{self.name}: the body ends inside the compressed stream (cut short)")
