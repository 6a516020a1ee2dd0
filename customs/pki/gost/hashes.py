"""GOST hash functions, hashlib-style, computed by the C extension ``customs.pki.gost._hashes``.

Names (``new(name, data=b"")``):

- ``"gost34311-95"``: GOST 34.311-95, Kazakhstan's adoption of GOST R 34.11-94 (OID 1.2.398.3.10.1.3.1), with the
  S-boxes NCA RK uses: those of id-GostR3411-94-TestParamSet (RFC 4357; the set of RFC 5831's examples). A real
  time-stamp token of NCA's TSA proves it (tests/unit/test_gost_hashes.py); ``new("gost34311-95", paramset="cryptopro")``
  takes id-GostR3411-94-CryptoProParamSet instead (RFC 4357 section 11.2, the usual one in Russian CMS).
- ``"streebog256"``, ``"streebog512"``: GOST R 34.11-2012 (RFC 6986), Kazakhstan's GOST 34.11-2015.

Digest byte order: ``digest()`` is the byte string that CMS carries as messageDigest, i.e. the final state as a
little-endian number, byte 0 the least significant (how openssl's GOST engine, rhash and gostsum print it). The RFCs
print their examples as big-endian numbers: reverse those bytes to compare.

Buffers of 2 KiB or more are hashed with the GIL released.
"""

from __future__ import annotations

from typing import Literal

from customs.pki.gost import _hashes

Buffer = bytes | bytearray | memoryview  # anything with the buffer protocol (collections.abc.Buffer from 3.12 on)

PARAMSETS = {"test": 0, "cryptopro": 1}  # GOST 34.311-95 S-boxes: "test" is NCA RK's

NAMES = ("gost34311-95", "streebog256", "streebog512")


class GostHash:
    """A hashlib-like hash object: update(), digest(), hexdigest(), copy(), name, digest_size, block_size."""

    __slots__ = ("_state", "name")

    def __init__(self, name: str, state) -> None:
        self.name = name
        self._state = state

    @property
    def digest_size(self) -> int:
        return self._state.digest_size

    @property
    def block_size(self) -> int:
        return self._state.block_size

    def update(self, data: Buffer) -> None:
        self._state.update(data)

    def digest(self) -> bytes:
        return self._state.digest()

    def hexdigest(self) -> str:
        return self._state.digest().hex()

    def copy(self) -> GostHash:
        return GostHash(self.name, self._state.copy())

    def __repr__(self) -> str:
        return f"<{self.name} GostHash object @ {id(self):#x}>"


def gost34311_95(data: Buffer = b"", *, paramset: Literal["test", "cryptopro"] = "test") -> GostHash:
    """GOST 34.311-95 / GOST R 34.11-94, 32 bytes; paramset "test" (NCA RK's S-boxes, the default) or "cryptopro"."""
    if paramset not in PARAMSETS:
        raise ValueError(f"unknown GOST 34.311-95 parameter set {paramset!r}: 'test' (NCA RK) or 'cryptopro'")
    name = "gost34311-95" if paramset == "test" else "gost34311-95-cryptopro"
    return GostHash(name, _hashes.Gost94(PARAMSETS[paramset], data))


def streebog256(data: Buffer = b"") -> GostHash:
    """GOST R 34.11-2012 / GOST 34.11-2015, 256 bits."""
    return GostHash("streebog256", _hashes.Streebog(32, data))


def streebog512(data: Buffer = b"") -> GostHash:
    """GOST R 34.11-2012 / GOST 34.11-2015, 512 bits."""
    return GostHash("streebog512", _hashes.Streebog(64, data))


def new(name: str, data: Buffer = b"", **kwargs) -> GostHash:
    """hashlib.new() for the GOST hashes: ``name`` one of NAMES (case-insensitive); ``paramset`` only for gost34311-95."""
    key = name.lower()
    if key == "gost34311-95":
        return gost34311_95(data, **kwargs)
    if kwargs:
        raise TypeError(f"{name} takes no options, got {sorted(kwargs)}")
    if key == "streebog256":
        return streebog256(data)
    if key == "streebog512":
        return streebog512(data)
    raise ValueError(f"unsupported GOST hash {name!r}; known: {', '.join(NAMES)}")
