"""GOST hash functions (customs/pki/gost, C extension): the standards' published examples, NCA RK's real time-stamp
token, and a cross-check against the pure-Python reference (gost_reference.py) on random inputs."""

from __future__ import annotations

import random
import threading

import pytest
from asn1crypto import cms

from customs.pki.gost import hashes
from tests.helpers import NCA_REAL
from tests.unit import gost_reference as ref


def gost94(data: bytes, paramset: str = "test") -> str:
    return hashes.new("gost34311-95", data, paramset=paramset).hexdigest()


def rfc(number: str) -> str:
    """An RFC's number printed big-endian (0x...) as the digest's byte string in hex: its bytes reversed."""
    return bytes.fromhex(number.removeprefix("0x"))[::-1].hex()


# ------------------------------------------------------------------------------------------------
# GOST R 34.11-94 / GOST 34.311-95

# RFC 5831 section 7.3 (id-GostR3411-94-TestParamSet): the digests printed there as big-endian numbers (the messages
# too; the first is checked in that form).
RFC5831 = [
    (b"This is message, length=32 bytes", "0xFAFF37A615A816691CFF3EF8B68CA247E09525F39F8119832EB81975D366C4B1"),
    (b"Suppose the original message has length = 50 bytes", "0x0852F5623B89DD57AEB4781FE54DF14EEAFBC1350613763A0D770AA657BA1A47"),
]


@pytest.mark.parametrize(("message", "digest"), RFC5831, ids=["32 bytes", "50 bytes"])
def test_rfc5831_examples_with_the_test_parameter_set(message, digest):
    if len(message) == 32:
        assert rfc("0x73657479622032333D6874676E656C202C6567617373656D2073692073696854") == message.hex()
    assert gost94(message) == rfc(digest)


# GOST R 34.11-94 examples for both RFC 4357 S-box sets (as listed with the standard's test vectors, e.g. Wikipedia
# "GOST (hash function)"), as byte strings in hex.
VECTORS = [
    (
        b"",
        "ce85b99cc46752fffee35cab9a7b0278abb4c2d2055cff685af4912c49490f8d",
        "981e5f3ca30c841487830f84fb433e13ac1101569b9c13584ac483234cd656c0",
    ),
    (
        b"a",
        "d42c539e367c66e9c88a801f6649349c21871b4344c6a573f849fdce62f314dd",
        "e74c52dd282183bf37af0079c9f78055715a103f17e3133ceff1aacf2f403011",
    ),
    (
        b"abc",
        "f3134348c44fb1b2a277729e2285ebb5cb5e0f29c975bc753b70497c06a4d51d",
        "b285056dbf18d7392d7677369524dd14747459ed8143997e163b2986f92fd42c",
    ),
    (
        b"message digest",
        "ad4434ecb18f2c99b60cbe59ec3d2469582b65273f48de72db2fde16a4889a4d",
        "bc6041dd2aa401ebfa6e9886734174febdb4729aa972d60f549ac39b29721ba0",
    ),
    (
        b"U" * 128,
        "53a3a3ed25180cef0c1d85a074273e551c25660a87062a52d926a9e8fe5733a4",
        "1c4ac7614691bbf427fa2316216be8f10d92edfd37cd1027514c1008f649c4e8",
    ),
    (
        b"a" * 1_000_000,
        "5c00ccc2734cdd3332d3d4749576e3c1a7dbaf0e7ea74e9fa602413c90a129fa",
        "8693287aa62f9478f7cb312ec0866b6c4e4a0f11160441e8f4ffcd2715dd554f",
    ),
    (
        b"The quick brown fox jumps over the lazy dog",
        "77b7fa410c9ac58a25f49bca7d0468c9296529315eaca76bd1a10f376d1f4294",
        "9004294a361a508c586fe53d1f1b02746765e71b765472786e4770d565830a76",
    ),
    (
        b"The quick brown fox jumps over the lazy cog",
        "a3ebc4daaab78b0be131dab5737a7f67e602670d543521319150d2e14eeec445",
        "a93124f5bf2c6d83c3bbf722bc55569310245ca5957541f4dbd7dfaf8137e6f2",
    ),
]


@pytest.mark.parametrize(
    ("message", "test_set", "cryptopro_set"), VECTORS, ids=lambda v: repr(v[:16]) if isinstance(v, bytes) else ""
)
def test_gost94_vectors_of_both_parameter_sets(message, test_set, cryptopro_set):
    assert gost94(message) == test_set
    assert gost94(message, "cryptopro") == cryptopro_set


# ------------------------------------------------------------------------------------------------
# GOST R 34.11-2012 Streebog: RFC 6986 section 10, printed there as big-endian numbers

M1 = (
    "0x32313039383736353433323130393837363534333231303938373635343332313039383736353433323130393837363534333231303938"
    "3736353433323130"
)
M2 = (
    "0xfbe2e5f0eee3c820fbeafaebef20fffbf0e1e0f0f520e0ed20e8ece0ebe5f0f2f120fff0eeec20f120faf2fee5e2202ce8f6f3ede220e8e6eee1e8f0f2d1"
    "202ce8f0f2e5e220e5d1"
)
RFC6986 = [
    (
        "M1",
        M1,
        "streebog512",
        "0x486f64c1917879417fef082b3381a4e211c324f074654c38823a7b76f830ad00fa1fbae42b1285c0352f227524bc9ab16254288dd6863dccd5b9f54a1ad0541b",
    ),
    ("M1", M1, "streebog256", "0x00557be5e584fd52a449b16b0251d05d27f94ab76cbaa6da890b59d8ef1e159d"),
    (
        "M2",
        M2,
        "streebog512",
        "0x28fbc9bada033b1460642bdcddb90c3fb3e56c497ccd0f62b8a2ad4935e85f037613966de4ee00531ae60f3b5a47f8dae06915d5f2f194996fcabf2622e6881e",
    ),
    ("M2", M2, "streebog256", "0x508f7e553c06501d749a66fc28c6cac0b005746d97537fa85d9e40904efed29d"),
]


@pytest.mark.parametrize(("label", "message", "name", "digest"), RFC6986, ids=[f"{r[0]}-{r[2]}" for r in RFC6986])
def test_rfc6986_examples(label, message, name, digest):
    data = bytes.fromhex(message.removeprefix("0x"))[::-1]
    if label == "M1":
        assert data == b"012345678901234567890123456789012345678901234567890123456789012"
    else:  # "Се ветри, Стрибожи внуци..." in windows-1251, 72 bytes: more than one block
        assert len(data) == 72 and data.decode("cp1251").startswith("Се ветри, Стрибожи внуци")
    assert hashes.new(name, data).hexdigest() == rfc(digest)


def test_streebog_of_nothing():
    # The empty message, as GOST R 34.11-2012 implementations list it (one padded block)
    assert hashes.streebog512().hexdigest() == (
        "8e945da209aa869f0455928529bcae4679e9873ab707b55315f56ceb98bef0a7362f715528356ee83cda5f2aac4c6ad2ba3a715c1bcd81cb8e9f90bf4c1c1a8a"
    )
    assert hashes.streebog256().hexdigest() == "3f539a213e97c802cc229d474c6aa32a825a360b2a933a949fd925208d9ce1bb"


# ------------------------------------------------------------------------------------------------
# NCA RK's real time-stamp token: which GOST 34.311-95 it is


def tsa_token() -> tuple[bytes, bytes]:
    """The encapsulated TSTInfo (eContent's octets) and the signed messageDigest of NCA's real time-stamp token."""
    if not NCA_REAL.is_dir():
        pytest.skip(f"real NCA fixtures not found at {NCA_REAL} (shared/fixtures/nca-real)")
    signed = cms.ContentInfo.load((NCA_REAL / "tsp_token.bin").read_bytes())["content"]
    signer = signed["signer_infos"][0]
    assert signer["digest_algorithm"]["algorithm"].dotted == "1.2.398.3.10.1.3.1"  # GOST 34.311-95
    content = signed["encap_content_info"]["content"].contents
    (digest,) = [a["values"][0].native for a in signer["signed_attrs"] if a["type"].native == "message_digest"]
    return content, digest


def test_real_nca_time_stamp_token_digest_is_gost34311_with_the_test_sboxes():
    """NCA's TSA signed messageDigest = GOST 34.311-95 of TSTInfo with the RFC 4357 test S-boxes, byte order as is."""
    content, digest = tsa_token()
    assert len(content) == 97 and len(digest) == 32
    assert hashes.new("gost34311-95", content).digest() == digest
    # and not the CryptoPro set, nor the reversed byte order: this is what identifies NCA's parameters
    assert hashes.new("gost34311-95", content, paramset="cryptopro").digest() != digest
    assert hashes.new("gost34311-95", content).digest()[::-1] != digest
    assert ref.gost94(content, ref.SBOX_TEST) == digest


# ------------------------------------------------------------------------------------------------
# The C code against the reference

KINDS = [
    ("gost34311-95", lambda d: ref.gost94(d, ref.SBOX_TEST), {}),
    ("gost34311-95", lambda d: ref.gost94(d, ref.SBOX_CRYPTOPRO), {"paramset": "cryptopro"}),
    ("streebog256", lambda d: ref.streebog(d, 32), {}),
    ("streebog512", lambda d: ref.streebog(d, 64), {}),
]
KIND_IDS = ["gost34311-95", "gost34311-95-cryptopro", "streebog256", "streebog512"]
LENGTHS = [0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 127, 128, 129]


def chunked(c_hash, data: bytes, rng: random.Random):
    """Feeds data in random pieces (some empty, some crossing block boundaries) and returns the object."""
    pos = 0
    while pos < len(data):
        step = rng.choice([0, 1, 7, 31, 32, 33, 64, 65, 1000, 4096, 300_000])
        c_hash.update(memoryview(data)[pos : pos + step])
        pos += step
    return c_hash


@pytest.mark.parametrize(("name", "reference", "options"), KINDS, ids=KIND_IDS)
def test_c_code_matches_the_reference_on_random_inputs(name, reference, options):
    rng = random.Random(f"gost-{name}-{options}")
    lengths = LENGTHS + [rng.randrange(130, 5000) for _ in range(12)]
    for n in lengths:
        data = rng.randbytes(n)
        expected = reference(data)
        assert hashes.new(name, data, **options).digest() == expected, n
        assert chunked(hashes.new(name, **options), data, rng).digest() == expected, n


@pytest.mark.parametrize(("name", "reference", "options"), [KINDS[0], KINDS[2]], ids=[KIND_IDS[0], KIND_IDS[2]])
def test_c_code_matches_the_reference_on_thousands_of_blocks_in_pieces(name, reference, options):
    """Over 128 KiB (4,097 blocks), fed in random pieces (the buffer, the length counter and the checksum's carries
    over many blocks; from 2 KiB up the C code runs without the GIL). The reference takes some seconds per MB: one
    run each of 34.311-95 and Streebog-256 (the other parameter set and Streebog-512 share all of that code)."""
    rng = random.Random(f"big-{name}")
    data = rng.randbytes((1 << 17) + 33)
    assert chunked(hashes.new(name, **options), data, rng).digest() == reference(data)


# ------------------------------------------------------------------------------------------------
# The hashlib-like interface


def test_hashlib_like_interface():
    h = hashes.new("gost34311-95", b"ab")
    assert (h.name, h.digest_size, h.block_size) == ("gost34311-95", 32, 32)
    snapshot = h.copy()
    h.update(b"c")
    assert h.digest() == h.digest() == bytes.fromhex(VECTORS[2][1])  # digest() does not end the object
    assert snapshot.hexdigest() == gost94(b"ab")
    h.update(bytearray(b"d"))
    assert h.hexdigest() == gost94(b"abcd")
    assert hashes.new("STREEBOG256").digest_size == 32 and hashes.new("streebog512").block_size == 64
    assert hashes.new("gost34311-95", paramset="cryptopro").name == "gost34311-95-cryptopro"
    with pytest.raises(ValueError, match="unsupported GOST hash"):
        hashes.new("gost94-unknown")
    with pytest.raises(ValueError, match="parameter set"):
        hashes.new("gost34311-95", paramset="A")
    with pytest.raises(TypeError):
        hashes.new("streebog256", paramset="test")
    with pytest.raises(TypeError):
        hashes.new("streebog256", "text")  # str must be encoded first


def test_threads_hash_in_parallel_and_share_an_object_safely():
    """Large updates release the GIL; updates of one shared object from several threads are serialised, not mixed."""
    piece = bytes(range(256)) * 64  # 16 KiB: above the size that releases the GIL
    shared = hashes.new("streebog256")
    own = {}

    def work(i: int) -> None:
        mine = hashes.new("gost34311-95")
        for _ in range(20):
            shared.update(piece)
            mine.update(piece)
        own[i] = mine.digest()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(own.values()) == {hashes.new("gost34311-95", piece * 20).digest()}
    assert shared.digest() == hashes.new("streebog256", piece * 80).digest()  # identical pieces: order cannot matter
