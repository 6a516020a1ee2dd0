"""Slow pure-Python reference implementations of GOST R 34.11-94 (= GOST 34.311-95) and GOST R 34.11-2012
Streebog (= GOST 34.11-2015), written from the standards' descriptions (RFC 5831, RFC 6986) with Python
integers, as plainly as possible. Used only by the tests, to cross-check the C extension on random inputs.

Byte conventions, the same as the C code's: a message is a byte string hashed in order; both standards treat a
block as a little-endian integer (the first byte is the least significant), and the digest is the final state
written out as that little-endian integer (the RFCs print it as a big-endian number, i.e. reversed).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------
# GOST R 34.11-94 / GOST 34.311-95

# Rows K1..K8 of the GOST 28147-89 substitution box: K1 substitutes the least significant 4 bits.
SBOX_TEST = (  # id-GostR3411-94-TestParamSet (RFC 5831 section 7.3, RFC 4357)
    (4, 10, 9, 2, 13, 8, 0, 14, 6, 11, 1, 12, 7, 15, 5, 3),
    (14, 11, 4, 12, 6, 13, 15, 10, 2, 3, 8, 1, 0, 7, 5, 9),
    (5, 8, 1, 13, 10, 3, 4, 2, 14, 15, 12, 7, 6, 0, 9, 11),
    (7, 13, 10, 1, 0, 8, 9, 15, 14, 4, 6, 12, 11, 2, 5, 3),
    (6, 12, 7, 1, 5, 15, 13, 8, 4, 10, 9, 14, 0, 3, 11, 2),
    (4, 11, 10, 0, 7, 2, 1, 13, 3, 6, 8, 5, 9, 12, 15, 14),
    (13, 11, 4, 1, 3, 15, 5, 9, 0, 10, 14, 7, 6, 8, 2, 12),
    (1, 15, 13, 0, 5, 7, 10, 4, 9, 2, 3, 14, 6, 11, 8, 12),
)
SBOX_CRYPTOPRO = (  # id-GostR3411-94-CryptoProParamSet (RFC 4357 section 11.2)
    (10, 4, 5, 6, 8, 1, 3, 7, 13, 12, 14, 0, 9, 2, 11, 15),
    (5, 15, 4, 0, 2, 13, 11, 9, 1, 7, 6, 3, 12, 14, 10, 8),
    (7, 15, 12, 14, 9, 4, 1, 0, 3, 11, 5, 2, 6, 10, 8, 13),
    (4, 10, 7, 12, 0, 15, 2, 8, 14, 1, 6, 5, 13, 11, 9, 3),
    (7, 6, 4, 11, 9, 12, 2, 10, 1, 8, 0, 14, 15, 13, 3, 5),
    (7, 6, 2, 4, 13, 9, 15, 0, 10, 1, 5, 11, 8, 14, 12, 3),
    (13, 14, 4, 1, 7, 0, 5, 10, 3, 12, 8, 15, 6, 2, 9, 11),
    (1, 3, 10, 9, 5, 11, 4, 15, 8, 6, 7, 14, 13, 0, 2, 12),
)

_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1
_M256 = (1 << 256) - 1
_C3 = 0xFF00FFFF000000FFFF0000FF00FFFF0000FF00FF00FF00FFFF00FF00FF00FF00


def _byte_sbox(sbox) -> list[list[int]]:
    """The substitution of both nibbles of byte k of a 32-bit word (4 tables, so that a round does 4 look-ups)."""
    return [[sbox[2 * k][b & 15] | sbox[2 * k + 1][b >> 4] << 4 for b in range(256)] for k in range(4)]


_BYTE_SBOX: dict[int, list[list[int]]] = {}


def _gost28147_encrypt(sbox, key: int, block: int) -> int:
    """GOST 28147-89 simple substitution mode, one 64-bit block; key and block as little-endian integers."""
    t = _BYTE_SBOX.get(id(sbox)) or _BYTE_SBOX.setdefault(id(sbox), _byte_sbox(sbox))
    k = [(key >> (32 * i)) & _M32 for i in range(8)]
    order = k * 3 + k[::-1]
    n1, n2 = block & _M32, block >> 32
    for subkey in order:
        x = (n1 + subkey) & _M32
        y = t[0][x & 255] | t[1][x >> 8 & 255] << 8 | t[2][x >> 16 & 255] << 16 | t[3][x >> 24] << 24
        y = ((y << 11) | (y >> 21)) & _M32
        n1, n2 = n2 ^ y, n1
    return n1 << 32 | n2  # the last round does not swap


def _a(y: int) -> int:
    y1, y2, y3, y4 = ((y >> (64 * i)) & _M64 for i in range(4))
    return (y1 ^ y2) << 192 | y4 << 128 | y3 << 64 | y2


def _p(y: int) -> int:
    b = y.to_bytes(32, "little")  # b[0] = y1
    out = bytearray(32)
    for i in range(4):
        for k in range(1, 9):
            out[i + 1 + 4 * (k - 1) - 1] = b[8 * i + k - 1]  # phi(i + 1 + 4(k-1)) = 8i + k
    return int.from_bytes(out, "little")


def _psi(y: int) -> int:
    """psi(y16 || ... || y1) = (y1 ^ y2 ^ y3 ^ y4 ^ y13 ^ y16) || y16 || ... || y2, on 16-bit words (y1 the lowest)."""
    top = (y ^ y >> 16 ^ y >> 32 ^ y >> 48 ^ y >> 192 ^ y >> 240) & 0xFFFF
    return (y >> 16) | top << 240


def _step(sbox, h: int, m: int) -> int:
    keys = []
    u, v = h, m
    w = u ^ v
    keys.append(_p(w))
    for c in (0, _C3, 0):
        u = _a(u) ^ c
        v = _a(_a(v))
        keys.append(_p(u ^ v))
    s = 0
    for i in range(4):
        s |= _gost28147_encrypt(sbox, keys[i], (h >> (64 * i)) & _M64) << (64 * i)
    for _ in range(12):
        s = _psi(s)
    x = h ^ _psi(m ^ s)
    for _ in range(61):
        x = _psi(x)
    return x


def gost94(data: bytes, sbox=SBOX_CRYPTOPRO) -> bytes:
    """GOST R 34.11-94 of data; the digest is the final state as a 32-byte little-endian integer."""
    h, sigma, length = 0, 0, 0
    pos = 0
    while len(data) - pos >= 32:
        m = int.from_bytes(data[pos : pos + 32], "little")
        h = _step(sbox, h, m)
        sigma = (sigma + m) & _M256
        length += 256
        pos += 32
    if pos < len(data):
        m = int.from_bytes(data[pos:], "little")  # zero-padded on the high side
        h = _step(sbox, h, m)
        sigma = (sigma + m) & _M256
        length += 8 * (len(data) - pos)
    h = _step(sbox, h, length)
    h = _step(sbox, h, sigma)
    return h.to_bytes(32, "little")


# ------------------------------------------------------------------------------------------------
# GOST R 34.11-2012 Streebog (RFC 6986)

PI = bytes(
    [252, 238, 221, 17, 207, 110, 49, 22, 251, 196, 250, 218, 35, 197, 4, 77, 233, 119, 240, 219, 147, 46, 153, 186, 23, 54]
    + [241, 187, 20, 205, 95, 193, 249, 24, 101, 90, 226, 92, 239, 33, 129, 28, 60, 66, 139, 1, 142, 79, 5, 132, 2, 174]
    + [227, 106, 143, 160, 6, 11, 237, 152, 127, 212, 211, 31, 235, 52, 44, 81, 234, 200, 72, 171, 242, 42, 104, 162, 253]
    + [58, 206, 204, 181, 112, 14, 86, 8, 12, 118, 18, 191, 114, 19, 71, 156, 183, 93, 135, 21, 161, 150, 41, 16, 123, 154]
    + [199, 243, 145, 120, 111, 157, 158, 178, 177, 50, 117, 25, 61, 255, 53, 138, 126, 109, 84, 198, 128, 195, 189, 13, 87]
    + [223, 245, 36, 169, 62, 168, 67, 201, 215, 121, 214, 246, 124, 34, 185, 3, 224, 15, 236, 222, 122, 148, 176, 188, 220]
    + [232, 40, 80, 78, 51, 10, 74, 167, 151, 96, 115, 30, 0, 98, 68, 26, 184, 56, 130, 100, 159, 38, 65, 173, 69, 70, 146]
    + [39, 94, 85, 47, 140, 163, 165, 125, 105, 213, 149, 59, 7, 88, 179, 64, 134, 172, 29, 247, 48, 55, 107, 228, 136, 217]
    + [231, 137, 225, 27, 131, 73, 76, 63, 248, 254, 141, 83, 170, 144, 202, 216, 133, 97, 32, 113, 103, 164, 45, 43, 9, 91]
    + [203, 155, 37, 208, 190, 229, 108, 82, 89, 166, 116, 210, 230, 244, 180, 192, 209, 102, 175, 194, 57, 75, 99, 182]
)
TAU = [8 * (i % 8) + i // 8 for i in range(64)]  # the transposition of an 8x8 byte matrix
# The rows of the linear map l (RFC 6986 section 5.3): A[0] is the image of the most significant input bit.
_A_HEX = (
    "8e20faa72ba0b470 47107ddd9b505a38 ad08b0e0c3282d1c d8045870ef14980e 6c022c38f90a4c07 3601161cf205268d 1b8e0b0e798c13c8 "
    "83478b07b2468764 a011d380818e8f40 5086e740ce47c920 2843fd2067adea10 14aff010bdd87508 0ad97808d06cb404 05e23c0468365a02 "
    "8c711e02341b2d01 46b60f011a83988e 90dab52a387ae76f 486dd4151c3dfdb9 24b86a840e90f0d2 125c354207487869 092e94218d243cba "
    "8a174a9ec8121e5d 4585254f64090fa0 accc9ca9328a8950 9d4df05d5f661451 c0a878a0a1330aa6 60543c50de970553 302a1e286fc58ca7 "
    "18150f14b9ec46dd 0c84890ad27623e0 0642ca05693b9f70 0321658cba93c138 86275df09ce8aaa8 439da0784e745554 afc0503c273aa42a "
    "d960281e9d1d5215 e230140fc0802984 71180a8960409a42 b60c05ca30204d21 5b068c651810a89e 456c34887a3805b9 ac361a443d1c8cd2 "
    "561b0d22900e4669 2b838811480723ba 9bcf4486248d9f5d c3e9224312c8c1a0 effa11af0964ee50 f97d86d98a327728 e4fa2054a80b329c "
    "727d102a548b194e 39b008152acb8227 9258048415eb419d 492c024284fbaec0 aa16012142f35760 550b8e9e21f7a530 a48b474f9ef5dc18 "
    "70a6a56e2440598e 3853dc371220a247 1ca76e95091051ad 0edd37c48a08a6d8 07e095624504536c 8d70c431ac02a736 c83862965601dd1b "
    "641c314b2b8ee083"
)
A = [int(a, 16) for a in _A_HEX.split()]
# Round constants C1..C12 (RFC 6986 section 6.5) as big-endian hex numbers, as printed there.
C = [
    int(c, 16)
    for c in (
        "b1085bda1ecadae9ebcb2f81c0657c1f2f6a76432e45d016714eb88d7585c4fc4b7ce09192676901a2422a08a460d31505767436cc744d23dd806559f2a64507",
        "6fa3b58aa99d2f1a4fe39d460f70b5d7f3feea720a232b9861d55e0f16b501319ab5176b12d699585cb561c2db0aa7ca55dda21bd7cbcd56e679047021b19bb7",
        "f574dcac2bce2fc70a39fc286a3d843506f15e5f529c1f8bf2ea7514b1297b7bd3e20fe490359eb1c1c93a376062db09c2b6f443867adb31991e96f50aba0ab2",
        "ef1fdfb3e81566d2f948e1a05d71e4dd488e857e335c3c7d9d721cad685e353fa9d72c82ed03d675d8b71333935203be3453eaa193e837f1220cbebc84e3d12e",
        "4bea6bacad4747999a3f410c6ca923637f151c1f1686104a359e35d7800fffbdbfcd1747253af5a3dfff00b723271a167a56a27ea9ea63f5601758fd7c6cfe57",
        "ae4faeae1d3ad3d96fa4c33b7a3039c02d66c4f95142a46c187f9ab49af08ec6cffaa6b71c9ab7b40af21f66c2bec6b6bf71c57236904f35fa68407a46647d6e",
        "f4c70e16eeaac5ec51ac86febf240954399ec6c7e6bf87c9d3473e33197a93c90992abc52d822c3706476983284a05043517454ca23c4af38886564d3a14d493",
        "9b1f5b424d93c9a703e7aa020c6e41414eb7f8719c36de1e89b4443b4ddbc49af4892bcb929b069069d18d2bd1a5c42f36acc2355951a8d9a47f0dd4bf02e71e",
        "378f5a541631229b944c9ad8ec165fde3a7d3a1b258942243cd955b7e00d0984800a440bdbb2ceb17b2b8a9aa6079c540e38dc92cb1f2a607261445183235adb",
        "abbedea680056f52382ae548b2e4f3f38941e71cff8a78db1fffe18a1b3361039fe76702af69334b7a1e6c303b7652f43698fad1153bb6c374b4c7fb98459ced",
        "7bcd9ed0efc889fb3002c6cd635afe94d8fa6bbbebab076120018021148466798a1d71efea48b9caefbacd1d7d476e98dea2594ac06fd85d6bcaa4cd81f32d1b",
        "378ee767f11631bad21380b00449b17acda43c32bcdf1d77f82012d430219f9b5d80ef9d1891cc86e71da4aa88e12852faf417d5d9b21b9948bc924af11bd720",
    )
]
_M512 = (1 << 512) - 1


def _s(x: int) -> int:
    return int.from_bytes(x.to_bytes(64, "big").translate(PI), "big")


def _pp(x: int) -> int:
    """P(a63..a0) = a_tau(63)..a_tau(0); tau is its own inverse and symmetric in the byte order."""
    b = x.to_bytes(64, "big")
    return int.from_bytes(bytes(b[t] for t in TAU), "big")


def _l_word(word: int) -> int:
    """l of one 64-bit word: the XOR of the rows A[i] for the bits i set, counted from the most significant."""
    r = 0
    for i in range(64):
        if (word >> (63 - i)) & 1:
            r ^= A[i]
    return r


# l is linear: l(w) is the XOR of l(byte k of w, in place) over the 8 bytes (tables so that the reference runs at a few
# seconds per MB, enough to check the C code on more than 1 MB).
_L_BYTE = [[_l_word(b << (8 * k)) for b in range(256)] for k in range(8)]


def _l(x: int) -> int:
    out = 0
    for j in range(8):  # eight 64-bit words, each through l
        word = (x >> (64 * j)) & _M64
        r = 0
        for k in range(8):
            r ^= _L_BYTE[k][(word >> (8 * k)) & 255]
        out |= r << (64 * j)
    return out


def _lps(x: int) -> int:
    return _l(_pp(_s(x)))


def _g(n: int, h: int, m: int) -> int:
    k = _lps(h ^ n)
    t = m
    for i in range(12):
        t = _lps(k ^ t)
        k = _lps(k ^ C[i])
    return t ^ k ^ h ^ m


def streebog(data: bytes, digest_size: int = 64) -> bytes:
    """Streebog-512 (digest_size 64) or -256 (32) of data."""
    h = 0 if digest_size == 64 else int.from_bytes(b"\x01" * 64, "little")
    n, sigma = 0, 0
    pos = 0
    # The message is a number whose least significant 512 bits are compressed first: with the little-endian
    # convention those are the first 64 bytes of the byte string.
    while len(data) - pos >= 64:
        m = int.from_bytes(data[pos : pos + 64], "little")
        h = _g(n, h, m)
        n = (n + 512) & _M512
        sigma = (sigma + m) & _M512
        pos += 64
    tail = data[pos:]
    m = int.from_bytes(tail, "little") | 1 << (8 * len(tail))  # padding: a 1 bit above the message, then zeros
    h = _g(n, h, m)
    n = (n + 8 * len(tail)) & _M512
    sigma = (sigma + m) & _M512
    h = _g(0, h, n)
    h = _g(0, h, sigma)
    out = h.to_bytes(64, "little")
    return out if digest_size == 64 else out[32:]  # Streebog-256: the most significant half
