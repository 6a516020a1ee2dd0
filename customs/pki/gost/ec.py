"""GOST 34.310-2004 and GOST 34.10-2015 (Kazakhstan's adoptions of GOST R 34.10-2001 and 34.10-2012):
the elliptic-curve signature scheme over the parameter sets NCA RK uses.

Verification involves no secret, so plain Python integers are enough: a 256-bit verification costs a few
milliseconds (bench/signatures.py). Signing is here for the test PKI only (``customs pki``, the tests, the
demo): it is not constant-time and must never hold a real key.

Integers in, integers out; the byte orders of certificates and CMS are ``customs.pki.gost.algorithms``'.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Curve:
    """y² = x³ + ax + b over GF(p); the base point (x, y) of prime order q."""

    name: str
    p: int
    a: int
    b: int
    q: int
    x: int
    y: int

    @property
    def bits(self) -> int:
        return 512 if self.p.bit_length() > 256 else 256

    @property
    def size(self) -> int:
        """Bytes of a coordinate or of r and s."""
        return self.bits // 8

    def contains(self, x: int, y: int) -> bool:
        return 0 <= x < self.p and 0 <= y < self.p and (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0


# The parameter sets, with the names of RFC 4357 / RFC 7836; each one's base point is checked to lie on its curve
# and to have order q (tests/unit/test_gost.py), so a wrong digit cannot pass unnoticed.
CRYPTOPRO_A = Curve(  # id-GostR3410-2001-CryptoPro-A-ParamSet (= id-tc26-gost-3410-2012-256-paramSetB)
    "id-GostR3410-2001-CryptoPro-A-ParamSet",
    p=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFD97,
    a=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFD94,
    b=0xA6,
    q=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF6C611070995AD10045841B09B761B893,
    x=0x1,
    y=0x8D91E471E0989CDA27DF505A453F2B7635294F2DDF23E3B122ACC99C9E9F1E14,
)
TC26_256_A = Curve(  # id-tc26-gost-3410-2012-256-paramSetA (a twisted Edwards curve, here in Weierstrass form)
    "id-tc26-gost-3410-2012-256-paramSetA",
    p=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFD97,
    a=0xC2173F1513981673AF4892C23035A27CE25E2013BF95AA33B22C656F277E7335,
    b=0x295F9BAE7428ED9CCC20E7C359A9D41A22FCCD9108E17BF7BA9337A6F8AE9513,
    q=0x400000000000000000000000000000000FD8CDDFC87B6635C115AF556C360C67,
    x=0x91E38443A5E82C0D880923425712B2BB658B9196932E02C78B2582FE742DAA28,
    y=0x32879423AB1A0375895786C4BB46E9565FDE0B5344766740AF268ADB32322E5C,
)
TC26_512_A = Curve(  # id-tc26-gost-3410-12-512-paramSetA
    "id-tc26-gost-3410-12-512-paramSetA",
    p=int("FF" * 62 + "FDC7", 16),
    a=int("FF" * 62 + "FDC4", 16),
    b=0xE8C2505DEDFC86DDC1BD0B2B6667F1DA34B82574761CB0E879BD081CFD0B6265EE3CB090F30D27614CB4574010DA90DD862EF9D4EBEE4761503190785A71C760,
    q=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF27E69532F48D89116FF22B8D4E0560609B4B38ABFAD2B85DCACDB1411F10B275,
    x=0x3,
    y=0x7503CFE87A836AE3A61B8816E25450E6CE5E1C93ACF1ABC1778064FDCBEFA921DF1626BE4FD036E93D75E6A50E3A41E98028FE5FC235F5B889A589CB5215F2A4,
)
# The example curve of GOST R 34.10-2012 appendix A.1 (RFC 7091 section 7.1): only for the standard's test vector.
STANDARD_EXAMPLE_256 = Curve(
    "GOST R 34.10-2012 A.1 example",
    p=0x8000000000000000000000000000000000000000000000000000000000000431,
    a=0x7,
    b=0x5FBFF498AA938CE739B8E022FBAFEF40563F6E6A3472FC2A514C0CE9DAE23B7E,
    q=0x8000000000000000000000000000000150FE8A1892976154C59CFC193ACCF5B3,
    x=0x2,
    y=0x08E2A8A0E65147D4BD6316030E16D19C85C97F0A9CA267122B96ABBCEA7E8FC8,
)

# ----------------------------------------------------------------------------------------------
# Points in Jacobian coordinates (X, Y, Z) = (x·Z², y·Z³); None is the point at infinity.

_Point = tuple[int, int, int] | None


def _double(curve: Curve, point: _Point) -> _Point:
    if point is None:
        return None
    x1, y1, z1 = point
    p = curve.p
    if y1 == 0:
        return None
    yy = y1 * y1 % p
    s = 4 * x1 * yy % p
    zz = z1 * z1 % p
    m = (3 * x1 * x1 + curve.a * zz * zz) % p
    x3 = (m * m - 2 * s) % p
    y3 = (m * (s - x3) - 8 * yy * yy) % p
    z3 = 2 * y1 * z1 % p
    return x3, y3, z3


def _add(curve: Curve, one: _Point, two: _Point) -> _Point:
    if one is None:
        return two
    if two is None:
        return one
    p = curve.p
    x1, y1, z1 = one
    x2, y2, z2 = two
    z1z1 = z1 * z1 % p
    z2z2 = z2 * z2 % p
    u1 = x1 * z2z2 % p
    u2 = x2 * z1z1 % p
    s1 = y1 * z2 * z2z2 % p
    s2 = y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(curve, one) if s1 == s2 else None
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    z3 = h * z1 * z2 % p
    return x3, y3, z3


def _affine(curve: Curve, point: _Point) -> tuple[int, int] | None:
    if point is None:
        return None
    x, y, z = point
    zi = pow(z, -1, curve.p)
    zi2 = zi * zi % curve.p
    return x * zi2 % curve.p, y * zi2 * zi % curve.p


def _combined(curve: Curve, k1: int, p1: tuple[int, int], k2: int, p2: tuple[int, int]) -> tuple[int, int] | None:
    """k1·P1 + k2·P2 in one pass over the bits (Shamir's trick)."""
    one: _Point = (p1[0], p1[1], 1)
    two: _Point = (p2[0], p2[1], 1)
    both = _add(curve, one, two)
    acc: _Point = None
    for i in range(max(k1.bit_length(), k2.bit_length()) - 1, -1, -1):
        acc = _double(curve, acc)
        bit1, bit2 = (k1 >> i) & 1, (k2 >> i) & 1
        if bit1 and bit2:
            acc = _add(curve, acc, both)
        elif bit1:
            acc = _add(curve, acc, one)
        elif bit2:
            acc = _add(curve, acc, two)
    return _affine(curve, acc)


def multiply(curve: Curve, k: int, point: tuple[int, int]) -> tuple[int, int] | None:
    acc: _Point = None
    base: _Point = (point[0], point[1], 1)
    for i in range(k.bit_length() - 1, -1, -1):
        acc = _double(curve, acc)
        if (k >> i) & 1:
            acc = _add(curve, acc, base)
    return _affine(curve, acc)


# ----------------------------------------------------------------------------------------------
# The scheme (GOST R 34.10-2012 sections 6.1 and 6.2)


def _e(curve: Curve, digest_value: int) -> int:
    e = digest_value % curve.q
    return e or 1


def verify(curve: Curve, public: tuple[int, int], digest_value: int, r: int, s: int) -> bool:
    """True when (r, s) is a signature of the message whose hash, read as an integer, is ``digest_value``."""
    if not (0 < r < curve.q and 0 < s < curve.q) or not curve.contains(*public):
        return False
    v = pow(_e(curve, digest_value), -1, curve.q)
    z1 = s * v % curve.q
    z2 = (curve.q - r) * v % curve.q
    point = _combined(curve, z1, (curve.x, curve.y), z2, public)
    return point is not None and point[0] % curve.q == r


def public_key(curve: Curve, private: int) -> tuple[int, int]:
    point = multiply(curve, private, (curve.x, curve.y))
    assert point is not None
    return point


def new_private_key(curve: Curve) -> int:
    return secrets.randbelow(curve.q - 1) + 1


def sign(curve: Curve, private: int, digest_value: int, *, k: int | None = None) -> tuple[int, int]:
    """(r, s) for the test PKI (not constant-time: never with a real key); ``k`` only for the standard's vector."""
    e = _e(curve, digest_value)
    while True:
        nonce = k if k is not None else secrets.randbelow(curve.q - 1) + 1
        point = multiply(curve, nonce, (curve.x, curve.y))
        assert point is not None
        r = point[0] % curve.q
        s = (r * private + nonce * e) % curve.q
        if r and s:
            return r, s
        if k is not None:
            raise ValueError("this k gives r = 0 or s = 0")
