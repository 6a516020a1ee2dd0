/*
 * customs.pki.gost._hashes: GOST hash functions in C, for CMS signatures of NCA RK (Kazakhstan).
 *
 *   Gost94(paramset)   GOST R 34.11-94 = GOST 34.311-95 (Kazakhstan), 32-byte digest. paramset 0: the S-boxes of
 *                      id-GostR3411-94-TestParamSet (RFC 4357, RFC 5831 section 7.3), which NCA RK uses
 *                      (OID 1.2.398.3.10.1.3.1; proven on a real NCA time-stamp token in the tests); 1: those of
 *                      id-GostR3411-94-CryptoProParamSet (RFC 4357 section 11.2).
 *   Streebog(size)     GOST R 34.11-2012 = GOST 34.11-2015 (Kazakhstan), size 64 (512 bits) or 32 (256 bits).
 *
 * Each object: update(data), digest() (does not end the object), copy(). Byte order: the standards read a message
 * block as a little-endian number (the first byte least significant) and the digest is the final state written
 * out the same way; that byte string is what CMS carries in messageDigest (the RFCs print the numbers big-endian,
 * i.e. reversed). Buffers of GIL_MINSIZE bytes or more are hashed with the GIL released, under the object's lock.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "pythread.h"
#include <stdint.h>
#include <string.h>

#define GIL_MINSIZE 2048

static inline uint64_t load64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
           (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline void store64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---------------------------------------------------------------------------------------------
 * GOST R 34.11-94 / GOST 34.311-95
 */

/* Rows K1..K8 of the GOST 28147-89 S-box; K1 substitutes the least significant 4 bits. */
static const uint8_t GOST94_SBOXES[2][8][16] = {
    {/* id-GostR3411-94-TestParamSet: NCA RK's */
     {4, 10, 9, 2, 13, 8, 0, 14, 6, 11, 1, 12, 7, 15, 5, 3},
     {14, 11, 4, 12, 6, 13, 15, 10, 2, 3, 8, 1, 0, 7, 5, 9},
     {5, 8, 1, 13, 10, 3, 4, 2, 14, 15, 12, 7, 6, 0, 9, 11},
     {7, 13, 10, 1, 0, 8, 9, 15, 14, 4, 6, 12, 11, 2, 5, 3},
     {6, 12, 7, 1, 5, 15, 13, 8, 4, 10, 9, 14, 0, 3, 11, 2},
     {4, 11, 10, 0, 7, 2, 1, 13, 3, 6, 8, 5, 9, 12, 15, 14},
     {13, 11, 4, 1, 3, 15, 5, 9, 0, 10, 14, 7, 6, 8, 2, 12},
     {1, 15, 13, 0, 5, 7, 10, 4, 9, 2, 3, 14, 6, 11, 8, 12}},
    {/* id-GostR3411-94-CryptoProParamSet */
     {10, 4, 5, 6, 8, 1, 3, 7, 13, 12, 14, 0, 9, 2, 11, 15},
     {5, 15, 4, 0, 2, 13, 11, 9, 1, 7, 6, 3, 12, 14, 10, 8},
     {7, 15, 12, 14, 9, 4, 1, 0, 3, 11, 5, 2, 6, 10, 8, 13},
     {4, 10, 7, 12, 0, 15, 2, 8, 14, 1, 6, 5, 13, 11, 9, 3},
     {7, 6, 4, 11, 9, 12, 2, 10, 1, 8, 0, 14, 15, 13, 3, 5},
     {7, 6, 2, 4, 13, 9, 15, 0, 10, 1, 5, 11, 8, 14, 12, 3},
     {13, 14, 4, 1, 7, 0, 5, 10, 3, 12, 8, 15, 6, 2, 9, 11},
     {1, 3, 10, 9, 5, 11, 4, 15, 8, 6, 7, 14, 13, 0, 2, 12}},
};

/* GOST 28147-89's round function per byte of its input: substitution of both nibbles, then the rotation left by
 * 11 bits (both linear over the disjoint nibbles): f(x) = T[0][x & 255] ^ T[1][x >> 8 & 255] ^ ... */
static uint32_t GOST94_T[2][4][256];

static void gost94_tables(void)
{
    for (int set = 0; set < 2; set++)
        for (int k = 0; k < 4; k++)
            for (int b = 0; b < 256; b++) {
                uint32_t x = (uint32_t)GOST94_SBOXES[set][2 * k][b & 15] << (8 * k) |
                             (uint32_t)GOST94_SBOXES[set][2 * k + 1][b >> 4] << (8 * k + 4);
                GOST94_T[set][k][b] = x << 11 | x >> 21;
            }
}

#define F28147(T, x) (T[0][(x) & 255] ^ T[1][(x) >> 8 & 255] ^ T[2][(x) >> 16 & 255] ^ T[3][(x) >> 24])

/* One 64-bit block (low half N1, high half N2) through GOST 28147-89 with the key k[0..7]. */
static inline uint64_t gost28147_encrypt(const uint32_t T[4][256], const uint32_t k[8], uint64_t block)
{
    uint32_t a = (uint32_t)block, b = (uint32_t)(block >> 32), t;
#define ROUNDS2(k1, k2) \
    t = a + (k1);       \
    b ^= F28147(T, t);  \
    t = b + (k2);       \
    a ^= F28147(T, t);
    for (int r = 0; r < 3; r++) {
        ROUNDS2(k[0], k[1]) ROUNDS2(k[2], k[3]) ROUNDS2(k[4], k[5]) ROUNDS2(k[6], k[7])
    }
    ROUNDS2(k[7], k[6]) ROUNDS2(k[5], k[4]) ROUNDS2(k[3], k[2]) ROUNDS2(k[1], k[0])
#undef ROUNDS2
    return (uint64_t)a << 32 | b; /* the last round does not swap */
}

/* The 256-bit values as four little-endian 64-bit words, word 0 the least significant. */
static const uint64_t GOST94_C3[4] = {0xff00ff00ff00ff00ULL, 0x00ff00ff00ff00ffULL, 0xff0000ff00ffff00ULL, 0xff00ffff000000ffULL};

/* The step function: h = chi(h, m). */
static void gost94_step(const uint32_t T[4][256], uint64_t h[4], const uint64_t m[4])
{
    uint64_t u[4], v[4], s[4], t;
    uint32_t key[8];
    uint16_t x[16 + 61];
    int i, j;

    memcpy(u, h, sizeof(u));
    memcpy(v, m, sizeof(v));
    for (i = 0; i < 4; i++) {
        if (i > 0) {
            /* A(Y) = (y1 ^ y2) || y4 || y3 || y2, u = A(u) ^ C_i, v = A(A(v)) */
            t = u[0] ^ u[1];
            u[0] = u[1], u[1] = u[2], u[2] = u[3], u[3] = t;
            if (i == 2)
                for (j = 0; j < 4; j++)
                    u[j] ^= GOST94_C3[j];
            t = v[0] ^ v[1];
            uint64_t t2 = v[1] ^ v[2];
            v[0] = v[2], v[1] = v[3], v[2] = t, v[3] = t2;
        }
        /* The key: P(u ^ v), the byte transposition phi(i + 1 + 4(k - 1)) = 8i + k: byte k of 32-bit key word
         * kw is byte kw of 64-bit word k. */
        uint64_t w0 = u[0] ^ v[0], w1 = u[1] ^ v[1], w2 = u[2] ^ v[2], w3 = u[3] ^ v[3];
        for (j = 0; j < 8; j++)
            key[j] = (uint32_t)(w0 >> (8 * j) & 255) | (uint32_t)(w1 >> (8 * j) & 255) << 8 |
                     (uint32_t)(w2 >> (8 * j) & 255) << 16 | (uint32_t)(w3 >> (8 * j) & 255) << 24;
        s[i] = gost28147_encrypt(T, key, h[i]);
    }

    /* Mixing: h = psi^61(h ^ psi(m ^ psi^12(s))), psi on sixteen 16-bit words y16..y1 (x[0] = y1):
     * psi(Y) = (y1 ^ y2 ^ y3 ^ y4 ^ y13 ^ y16) || y16 || ... || y2. psi^n slides along x[]. */
#define PSI_NEXT(x, j) (x[j] ^ x[(j) + 1] ^ x[(j) + 2] ^ x[(j) + 3] ^ x[(j) + 12] ^ x[(j) + 15])
    for (j = 0; j < 16; j++)
        x[j] = (uint16_t)(s[j / 4] >> (16 * (j % 4)));
    for (j = 0; j < 12; j++)
        x[16 + j] = PSI_NEXT(x, j);
    uint16_t y[17];
    for (j = 0; j < 16; j++)
        y[j] = x[12 + j] ^ (uint16_t)(m[j / 4] >> (16 * (j % 4)));
    y[16] = PSI_NEXT(y, 0);
    for (j = 0; j < 16; j++)
        x[j] = y[1 + j] ^ (uint16_t)(h[j / 4] >> (16 * (j % 4)));
    for (j = 0; j < 61; j++)
        x[16 + j] = PSI_NEXT(x, j);
#undef PSI_NEXT
    for (i = 0; i < 4; i++)
        h[i] = (uint64_t)x[61 + 4 * i] | (uint64_t)x[62 + 4 * i] << 16 | (uint64_t)x[63 + 4 * i] << 32 |
               (uint64_t)x[64 + 4 * i] << 48;
}

typedef struct {
    int set;
    uint64_t h[4], sigma[4];
    uint64_t bits; /* message length in bits, mod 2^64 (2^61 bytes are out of reach) */
    uint8_t buf[32];
    size_t buflen;
} gost94_ctx;

static void gost94_block(gost94_ctx *c, const uint8_t *p)
{
    uint64_t m[4], carry = 0;
    for (int i = 0; i < 4; i++) {
        m[i] = load64(p + 8 * i);
        uint64_t s = c->sigma[i] + m[i];
        uint64_t c1 = s < m[i];
        s += carry;
        carry = c1 | (s < carry);
        c->sigma[i] = s;
    }
    gost94_step(GOST94_T[c->set], c->h, m);
}

static void gost94_update(gost94_ctx *c, const uint8_t *p, size_t n)
{
    c->bits += (uint64_t)n * 8;
    if (c->buflen) {
        size_t take = 32 - c->buflen < n ? 32 - c->buflen : n;
        memcpy(c->buf + c->buflen, p, take);
        c->buflen += take, p += take, n -= take;
        if (c->buflen < 32)
            return;
        gost94_block(c, c->buf);
        c->buflen = 0;
    }
    for (; n >= 32; p += 32, n -= 32)
        gost94_block(c, p);
    memcpy(c->buf, p, n);
    c->buflen = n;
}

static void gost94_final(const gost94_ctx *in, uint8_t out[32])
{
    gost94_ctx c = *in;
    if (c.buflen) { /* the last partial block, zero-padded */
        memset(c.buf + c.buflen, 0, 32 - c.buflen);
        gost94_block(&c, c.buf);
    }
    uint64_t len[4] = {c.bits, 0, 0, 0};
    gost94_step(GOST94_T[c.set], c.h, len);
    gost94_step(GOST94_T[c.set], c.h, c.sigma);
    for (int i = 0; i < 4; i++)
        store64(out + 8 * i, c.h[i]);
}

/* ---------------------------------------------------------------------------------------------
 * GOST R 34.11-2012 Streebog (RFC 6986)
 */

static const uint8_t STREEBOG_PI[256] = {
    252, 238, 221,  17, 207, 110,  49,  22, 251, 196, 250, 218,  35, 197,   4,  77,
    233, 119, 240, 219, 147,  46, 153, 186,  23,  54, 241, 187,  20, 205,  95, 193,
    249,  24, 101,  90, 226,  92, 239,  33, 129,  28,  60,  66, 139,   1, 142,  79,
      5, 132,   2, 174, 227, 106, 143, 160,   6,  11, 237, 152, 127, 212, 211,  31,
    235,  52,  44,  81, 234, 200,  72, 171, 242,  42, 104, 162, 253,  58, 206, 204,
    181, 112,  14,  86,   8,  12, 118,  18, 191, 114,  19,  71, 156, 183,  93, 135,
     21, 161, 150,  41,  16, 123, 154, 199, 243, 145, 120, 111, 157, 158, 178, 177,
     50, 117,  25,  61, 255,  53, 138, 126, 109,  84, 198, 128, 195, 189,  13,  87,
    223, 245,  36, 169,  62, 168,  67, 201, 215, 121, 214, 246, 124,  34, 185,   3,
    224,  15, 236, 222, 122, 148, 176, 188, 220, 232,  40,  80,  78,  51,  10,  74,
    167, 151,  96, 115,  30,   0,  98,  68,  26, 184,  56, 130, 100, 159,  38,  65,
    173,  69,  70, 146,  39,  94,  85,  47, 140, 163, 165, 125, 105, 213, 149,  59,
      7,  88, 179,  64, 134, 172,  29, 247,  48,  55, 107, 228, 136, 217, 231, 137,
    225,  27, 131,  73,  76,  63, 248, 254, 141,  83, 170, 144, 202, 216, 133,  97,
     32, 113, 103, 164,  45,  43,   9,  91, 203, 155,  37, 208, 190, 229, 108,  82,
     89, 166, 116, 210, 230, 244, 180, 192, 209, 102, 175, 194,  57,  75,  99, 182,
};

/* The rows of the linear map l (RFC 6986 section 5.3): A[0] is the image of the most significant bit. */
static const uint64_t STREEBOG_A[64] = {
    0x8e20faa72ba0b470ULL, 0x47107ddd9b505a38ULL, 0xad08b0e0c3282d1cULL, 0xd8045870ef14980eULL,
    0x6c022c38f90a4c07ULL, 0x3601161cf205268dULL, 0x1b8e0b0e798c13c8ULL, 0x83478b07b2468764ULL,
    0xa011d380818e8f40ULL, 0x5086e740ce47c920ULL, 0x2843fd2067adea10ULL, 0x14aff010bdd87508ULL,
    0x0ad97808d06cb404ULL, 0x05e23c0468365a02ULL, 0x8c711e02341b2d01ULL, 0x46b60f011a83988eULL,
    0x90dab52a387ae76fULL, 0x486dd4151c3dfdb9ULL, 0x24b86a840e90f0d2ULL, 0x125c354207487869ULL,
    0x092e94218d243cbaULL, 0x8a174a9ec8121e5dULL, 0x4585254f64090fa0ULL, 0xaccc9ca9328a8950ULL,
    0x9d4df05d5f661451ULL, 0xc0a878a0a1330aa6ULL, 0x60543c50de970553ULL, 0x302a1e286fc58ca7ULL,
    0x18150f14b9ec46ddULL, 0x0c84890ad27623e0ULL, 0x0642ca05693b9f70ULL, 0x0321658cba93c138ULL,
    0x86275df09ce8aaa8ULL, 0x439da0784e745554ULL, 0xafc0503c273aa42aULL, 0xd960281e9d1d5215ULL,
    0xe230140fc0802984ULL, 0x71180a8960409a42ULL, 0xb60c05ca30204d21ULL, 0x5b068c651810a89eULL,
    0x456c34887a3805b9ULL, 0xac361a443d1c8cd2ULL, 0x561b0d22900e4669ULL, 0x2b838811480723baULL,
    0x9bcf4486248d9f5dULL, 0xc3e9224312c8c1a0ULL, 0xeffa11af0964ee50ULL, 0xf97d86d98a327728ULL,
    0xe4fa2054a80b329cULL, 0x727d102a548b194eULL, 0x39b008152acb8227ULL, 0x9258048415eb419dULL,
    0x492c024284fbaec0ULL, 0xaa16012142f35760ULL, 0x550b8e9e21f7a530ULL, 0xa48b474f9ef5dc18ULL,
    0x70a6a56e2440598eULL, 0x3853dc371220a247ULL, 0x1ca76e95091051adULL, 0x0edd37c48a08a6d8ULL,
    0x07e095624504536cULL, 0x8d70c431ac02a736ULL, 0xc83862965601dd1bULL, 0x641c314b2b8ee083ULL,
};

/* The round constants C1..C12 (RFC 6986 section 6.5) as little-endian 64-bit words, word 0 the least significant. */
static const uint64_t STREEBOG_C[12][8] = {
    {0xdd806559f2a64507ULL, 0x05767436cc744d23ULL, 0xa2422a08a460d315ULL, 0x4b7ce09192676901ULL,
     0x714eb88d7585c4fcULL, 0x2f6a76432e45d016ULL, 0xebcb2f81c0657c1fULL, 0xb1085bda1ecadae9ULL},
    {0xe679047021b19bb7ULL, 0x55dda21bd7cbcd56ULL, 0x5cb561c2db0aa7caULL, 0x9ab5176b12d69958ULL,
     0x61d55e0f16b50131ULL, 0xf3feea720a232b98ULL, 0x4fe39d460f70b5d7ULL, 0x6fa3b58aa99d2f1aULL},
    {0x991e96f50aba0ab2ULL, 0xc2b6f443867adb31ULL, 0xc1c93a376062db09ULL, 0xd3e20fe490359eb1ULL,
     0xf2ea7514b1297b7bULL, 0x06f15e5f529c1f8bULL, 0x0a39fc286a3d8435ULL, 0xf574dcac2bce2fc7ULL},
    {0x220cbebc84e3d12eULL, 0x3453eaa193e837f1ULL, 0xd8b71333935203beULL, 0xa9d72c82ed03d675ULL,
     0x9d721cad685e353fULL, 0x488e857e335c3c7dULL, 0xf948e1a05d71e4ddULL, 0xef1fdfb3e81566d2ULL},
    {0x601758fd7c6cfe57ULL, 0x7a56a27ea9ea63f5ULL, 0xdfff00b723271a16ULL, 0xbfcd1747253af5a3ULL,
     0x359e35d7800fffbdULL, 0x7f151c1f1686104aULL, 0x9a3f410c6ca92363ULL, 0x4bea6bacad474799ULL},
    {0xfa68407a46647d6eULL, 0xbf71c57236904f35ULL, 0x0af21f66c2bec6b6ULL, 0xcffaa6b71c9ab7b4ULL,
     0x187f9ab49af08ec6ULL, 0x2d66c4f95142a46cULL, 0x6fa4c33b7a3039c0ULL, 0xae4faeae1d3ad3d9ULL},
    {0x8886564d3a14d493ULL, 0x3517454ca23c4af3ULL, 0x06476983284a0504ULL, 0x0992abc52d822c37ULL,
     0xd3473e33197a93c9ULL, 0x399ec6c7e6bf87c9ULL, 0x51ac86febf240954ULL, 0xf4c70e16eeaac5ecULL},
    {0xa47f0dd4bf02e71eULL, 0x36acc2355951a8d9ULL, 0x69d18d2bd1a5c42fULL, 0xf4892bcb929b0690ULL,
     0x89b4443b4ddbc49aULL, 0x4eb7f8719c36de1eULL, 0x03e7aa020c6e4141ULL, 0x9b1f5b424d93c9a7ULL},
    {0x7261445183235adbULL, 0x0e38dc92cb1f2a60ULL, 0x7b2b8a9aa6079c54ULL, 0x800a440bdbb2ceb1ULL,
     0x3cd955b7e00d0984ULL, 0x3a7d3a1b25894224ULL, 0x944c9ad8ec165fdeULL, 0x378f5a541631229bULL},
    {0x74b4c7fb98459cedULL, 0x3698fad1153bb6c3ULL, 0x7a1e6c303b7652f4ULL, 0x9fe76702af69334bULL,
     0x1fffe18a1b336103ULL, 0x8941e71cff8a78dbULL, 0x382ae548b2e4f3f3ULL, 0xabbedea680056f52ULL},
    {0x6bcaa4cd81f32d1bULL, 0xdea2594ac06fd85dULL, 0xefbacd1d7d476e98ULL, 0x8a1d71efea48b9caULL,
     0x2001802114846679ULL, 0xd8fa6bbbebab0761ULL, 0x3002c6cd635afe94ULL, 0x7bcd9ed0efc889fbULL},
    {0x48bc924af11bd720ULL, 0xfaf417d5d9b21b99ULL, 0xe71da4aa88e12852ULL, 0x5d80ef9d1891cc86ULL,
     0xf82012d430219f9bULL, 0xcda43c32bcdf1d77ULL, 0xd21380b00449b17aULL, 0x378ee767f11631baULL},
};

/* LPS = L(P(S(x))) as eight tables: with the state as eight little-endian 64-bit words x[0..7], word j of the result
 * is the XOR over k of LPS_T[k][byte j of x[k]] (P puts byte j of word k at byte k of word j; L maps each word). */
static uint64_t LPS_T[8][256];

static void streebog_tables(void)
{
    for (int k = 0; k < 8; k++)
        for (int b = 0; b < 256; b++) {
            uint64_t r = 0;
            for (int bit = 0; bit < 8; bit++)
                if (STREEBOG_PI[b] >> bit & 1)
                    r ^= STREEBOG_A[63 - (8 * k + bit)];
            LPS_T[k][b] = r;
        }
}

static inline void lpsx(uint64_t out[8], const uint64_t a[8], const uint64_t b[8])
{
    uint64_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = a[i] ^ b[i];
    for (int j = 0; j < 8; j++) {
        int s = 8 * j;
        out[j] = LPS_T[0][x[0] >> s & 255] ^ LPS_T[1][x[1] >> s & 255] ^ LPS_T[2][x[2] >> s & 255] ^
                 LPS_T[3][x[3] >> s & 255] ^ LPS_T[4][x[4] >> s & 255] ^ LPS_T[5][x[5] >> s & 255] ^
                 LPS_T[6][x[6] >> s & 255] ^ LPS_T[7][x[7] >> s & 255];
    }
}

/* The compression function g_N(h, m) = E(LPS(h ^ N), m) ^ h ^ m. */
static void streebog_g(uint64_t h[8], const uint64_t n[8], const uint64_t m[8])
{
    uint64_t k[8], t[8];
    lpsx(k, h, n);
    lpsx(t, k, m);
    for (int i = 0; i < 11; i++) {
        lpsx(k, k, STREEBOG_C[i]);
        lpsx(t, k, t);
    }
    lpsx(k, k, STREEBOG_C[11]);
    for (int i = 0; i < 8; i++)
        h[i] ^= t[i] ^ k[i] ^ m[i];
}

static inline void add512(uint64_t a[8], const uint64_t b[8])
{
    uint64_t carry = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t s = a[i] + b[i];
        uint64_t c1 = s < b[i];
        s += carry;
        carry = c1 | (s < carry);
        a[i] = s;
    }
}

typedef struct {
    int size; /* 64 or 32 */
    uint64_t h[8], n[8], sigma[8];
    uint8_t buf[64];
    size_t buflen;
} streebog_ctx;

static void streebog_init(streebog_ctx *c, int size)
{
    memset(c, 0, sizeof(*c));
    c->size = size;
    if (size == 32)
        for (int i = 0; i < 8; i++)
            c->h[i] = 0x0101010101010101ULL;
}

/* One block of 64 message bytes, or the padded last one that carries bits of them. */
static void streebog_block(streebog_ctx *c, const uint8_t *p, uint64_t bits)
{
    uint64_t m[8], len[8] = {bits, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        m[i] = load64(p + 8 * i);
    streebog_g(c->h, c->n, m);
    add512(c->n, len);
    add512(c->sigma, m);
}

static void streebog_update(streebog_ctx *c, const uint8_t *p, size_t n)
{
    if (c->buflen) {
        size_t take = 64 - c->buflen < n ? 64 - c->buflen : n;
        memcpy(c->buf + c->buflen, p, take);
        c->buflen += take, p += take, n -= take;
        if (c->buflen < 64)
            return;
        streebog_block(c, c->buf, 512);
        c->buflen = 0;
    }
    for (; n >= 64; p += 64, n -= 64)
        streebog_block(c, p, 512);
    memcpy(c->buf, p, n);
    c->buflen = n;
}

static void streebog_final(const streebog_ctx *in, uint8_t *out)
{
    static const uint64_t zero[8] = {0};
    streebog_ctx c = *in;
    memset(c.buf + c.buflen, 0, 64 - c.buflen);
    c.buf[c.buflen] = 1; /* a 1 bit just above the message, then zeros */
    streebog_block(&c, c.buf, (uint64_t)c.buflen * 8);
    streebog_g(c.h, zero, c.n);
    streebog_g(c.h, zero, c.sigma);
    uint8_t full[64];
    for (int i = 0; i < 8; i++)
        store64(full + 8 * i, c.h[i]);
    memcpy(out, c.size == 64 ? full : full + 32, (size_t)c.size); /* 256 bits: the most significant half */
}

/* ---------------------------------------------------------------------------------------------
 * Python objects
 */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock; /* taken while the GIL is released, and by anything that reads or writes the state */
    int is_streebog;
    union {
        gost94_ctx g94;
        streebog_ctx sb;
    } u;
} HashObject;

static PyTypeObject Gost94Type, StreebogType;

static HashObject *hash_alloc(PyTypeObject *type)
{
    HashObject *self = PyObject_New(HashObject, type);
    if (self == NULL)
        return NULL;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyObject_Free(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    self->is_streebog = type == &StreebogType;
    return self;
}

static void hash_dealloc(HashObject *self)
{
    if (self->lock)
        PyThread_free_lock(self->lock);
    memset(&self->u, 0, sizeof(self->u));
    PyObject_Free(self);
}

static void ctx_update(HashObject *self, const uint8_t *p, size_t n)
{
    if (self->is_streebog)
        streebog_update(&self->u.sb, p, n);
    else
        gost94_update(&self->u.g94, p, n);
}

/* Takes the object's lock; with the GIL released first when someone else may hold the lock without the GIL. */
static void lock_state(HashObject *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static int hash_feed(HashObject *self, PyObject *data)
{
    Py_buffer view;
    if (PyUnicode_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "Strings must be encoded before hashing");
        return -1;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return -1;
    lock_state(self);
    if (view.len >= GIL_MINSIZE) {
        Py_BEGIN_ALLOW_THREADS
        ctx_update(self, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        ctx_update(self, view.buf, (size_t)view.len);
    }
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    return 0;
}

static PyObject *hash_update(HashObject *self, PyObject *data)
{
    if (hash_feed(self, data) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *hash_digest(HashObject *self, PyObject *Py_UNUSED(ignored))
{
    uint8_t out[64];
    Py_ssize_t size;
    lock_state(self);
    if (self->is_streebog) {
        streebog_final(&self->u.sb, out);
        size = self->u.sb.size;
    } else {
        gost94_final(&self->u.g94, out);
        size = 32;
    }
    PyThread_release_lock(self->lock);
    return PyBytes_FromStringAndSize((const char *)out, size);
}

static PyObject *hash_copy(HashObject *self, PyObject *Py_UNUSED(ignored))
{
    HashObject *other = hash_alloc(Py_TYPE(self));
    if (other == NULL)
        return NULL;
    lock_state(self);
    other->u = self->u;
    PyThread_release_lock(self->lock);
    return (PyObject *)other;
}

static PyObject *hash_digest_size(HashObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->is_streebog ? self->u.sb.size : 32);
}

static PyObject *hash_block_size(HashObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->is_streebog ? 64 : 32);
}

static PyMethodDef hash_methods[] = {
    {"update", (PyCFunction)hash_update, METH_O, "Hash more bytes (any object with the buffer protocol)."},
    {"digest", (PyCFunction)hash_digest, METH_NOARGS, "The digest of the bytes so far; the object can go on."},
    {"copy", (PyCFunction)hash_copy, METH_NOARGS, "An independent copy of the state."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hash_getset[] = {
    {"digest_size", (getter)hash_digest_size, NULL, "digest length in bytes", NULL},
    {"block_size", (getter)hash_block_size, NULL, "block length in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *gost94_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"paramset", "data", NULL};
    int set = 0;
    PyObject *data = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|iO:Gost94", kwlist, &set, &data))
        return NULL;
    if (set != 0 && set != 1) {
        PyErr_SetString(PyExc_ValueError, "paramset must be 0 (test S-boxes, NCA RK's) or 1 (CryptoPro)");
        return NULL;
    }
    HashObject *self = hash_alloc(type);
    if (self == NULL)
        return NULL;
    memset(&self->u.g94, 0, sizeof(self->u.g94));
    self->u.g94.set = set;
    if (data != NULL && hash_feed(self, data) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *streebog_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"digest_size", "data", NULL};
    int size = 64;
    PyObject *data = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|iO:Streebog", kwlist, &size, &data))
        return NULL;
    if (size != 32 && size != 64) {
        PyErr_SetString(PyExc_ValueError, "digest_size must be 32 or 64");
        return NULL;
    }
    HashObject *self = hash_alloc(type);
    if (self == NULL)
        return NULL;
    streebog_init(&self->u.sb, size);
    if (data != NULL && hash_feed(self, data) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyTypeObject Gost94Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "customs.pki.gost._hashes.Gost94",
    .tp_basicsize = sizeof(HashObject),
    .tp_dealloc = (destructor)hash_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Gost94(paramset=0, data=None): GOST R 34.11-94 / GOST 34.311-95; paramset 0 test S-boxes (NCA RK), 1 CryptoPro",
    .tp_methods = hash_methods,
    .tp_getset = hash_getset,
    .tp_new = gost94_new,
};

static PyTypeObject StreebogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "customs.pki.gost._hashes.Streebog",
    .tp_basicsize = sizeof(HashObject),
    .tp_dealloc = (destructor)hash_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Streebog(digest_size=64, data=None): GOST R 34.11-2012 / GOST 34.11-2015, 64 or 32 bytes",
    .tp_methods = hash_methods,
    .tp_getset = hash_getset,
    .tp_new = streebog_new,
};

static struct PyModuleDef hashes_module = {
    PyModuleDef_HEAD_INIT, "_hashes", "GOST R 34.11-94 (GOST 34.311-95) and GOST R 34.11-2012 (Streebog) in C.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hashes(void)
{
    gost94_tables();
    streebog_tables();
    if (PyType_Ready(&Gost94Type) < 0 || PyType_Ready(&StreebogType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&hashes_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&Gost94Type);
    Py_INCREF(&StreebogType);
    if (PyModule_AddObject(m, "Gost94", (PyObject *)&Gost94Type) < 0 ||
        PyModule_AddObject(m, "Streebog", (PyObject *)&StreebogType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
