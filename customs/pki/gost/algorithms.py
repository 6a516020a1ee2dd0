"""NCA RK's GOST algorithms in certificates, CRLs and CMS: object identifiers, keys, and signature values.

Byte orders, as proven on NCA's own signatures (tests/unit/test_gost.py, ../shared/fixtures/nca-real): the
public key is an OCTET STRING of x then y, each little-endian; the hash is read as a little-endian integer;
the signature value is r then s, each little-endian (the reverse of RFC 4491's s || r big-endian, which is
the same bytes reversed). The GOST 34.311-95 hash uses the S-boxes of the test parameter set
(1.2.398.3.10.1.3.1.1.0 in NCA's certificates; id-GostR3411-94-TestParamSet of RFC 4357).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from asn1crypto import core

from customs.pki.gost import ec, hashes

# Keys: algorithm OID -> (name, the parameter sets it may use, the hash that goes with it)
GOST2004 = "gost34310-2004"
GOST2015_256 = "gost3410-2015-256"
GOST2015_512 = "gost3410-2015-512"
KEY_ALGORITHMS = {
    "1.2.398.3.10.1.1.1.1": GOST2004,
    "1.2.398.3.10.1.1.2.1": GOST2015_256,
    "1.2.398.3.10.1.1.2.2": GOST2015_512,
}
KEY_OIDS = {name: oid for oid, name in KEY_ALGORITHMS.items()}
CURVES = {
    "1.2.398.3.10.1.1.1.1.1": ec.CRYPTOPRO_A,  # GOST 34.310-2004, parameter set A
    "1.2.398.3.10.1.1.2.1.1": ec.TC26_256_A,  # GOST 34.10-2015, 256 bits, parameter set A
    "1.2.398.3.10.1.1.2.2.1": ec.TC26_512_A,  # GOST 34.10-2015, 512 bits, parameter set A
}
CURVE_OIDS = {GOST2004: "1.2.398.3.10.1.1.1.1.1", GOST2015_256: "1.2.398.3.10.1.1.2.1.1", GOST2015_512: "1.2.398.3.10.1.1.2.2.1"}
DIGESTS = {  # digest algorithm OID -> name in customs.pki.gost.hashes
    "1.2.398.3.10.1.3.1": "gost34311-95",
    "1.2.398.3.10.1.3.2": "streebog256",
    "1.2.398.3.10.1.3.3": "streebog512",
}
DIGEST_OIDS = {name: oid for oid, name in DIGESTS.items()}
DIGEST_OF_KEY = {GOST2004: "gost34311-95", GOST2015_256: "streebog256", GOST2015_512: "streebog512"}
HASH_PARAMETERS_2004 = "1.2.398.3.10.1.3.1.1.0"  # the 34.311-95 parameter set written in NCA's 2004 keys
SIGNATURES = {  # signature algorithm OID -> the key algorithm it needs
    "1.2.398.3.10.1.1.1.2": GOST2004,  # GOST 34.311-95 with GOST 34.310-2004
    "1.2.398.3.10.1.1.2.3.1": GOST2015_256,  # GOST 34.11-2015 (256) with GOST 34.10-2015 (256)
    "1.2.398.3.10.1.1.2.3.2": GOST2015_512,  # GOST 34.11-2015 (512) with GOST 34.10-2015 (512)
}
SIGNATURE_OIDS = {key: oid for oid, key in SIGNATURES.items()}
TITLES = {
    GOST2004: "GOST 34.310-2004",
    GOST2015_256: "GOST 34.10-2015 (256 bits)",
    GOST2015_512: "GOST 34.10-2015 (512 bits)",
}
# Kazakh (1.2.398.3.10) and Russian (1.2.643) GOST arcs: a key under them that is not in KEY_ALGORITHMS is a GOST
# key of a kind NCA does not issue and is refused as unsupported, with its OID.
GOST_ARCS = ("1.2.398.3.10.", "1.2.643.")


class GostError(ValueError):
    """A GOST key or signature that cannot be used; the message says what is wrong."""


class _AlgorithmIdentifier(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _KeyParameters(core.Sequence):
    _fields = [
        ("public_key_param_set", core.ObjectIdentifier),
        ("digest_param_set", core.ObjectIdentifier, {"optional": True}),
    ]


class _SubjectPublicKeyInfo(core.Sequence):
    _fields = [("algorithm", _AlgorithmIdentifier), ("public_key", core.OctetBitString)]


class _PrivateKeyInfo(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("private_key_algorithm", _AlgorithmIdentifier),
        ("private_key", core.OctetString),
    ]


@dataclass(frozen=True)
class GostPublicKey:
    algorithm: str  # GOST2004, GOST2015_256 or GOST2015_512
    curve: ec.Curve
    x: int
    y: int

    @property
    def title(self) -> str:
        return TITLES[self.algorithm]

    @property
    def digest(self) -> str:
        return DIGEST_OF_KEY[self.algorithm]

    def verify_digest(self, digest: bytes, signature: bytes) -> bool:
        """The signature value (r then s, little-endian) over a message whose hash is ``digest``."""
        size = self.curve.size
        if len(signature) != 2 * size or len(digest) != size:
            return False
        r = int.from_bytes(signature[:size], "little")
        s = int.from_bytes(signature[size:], "little")
        return ec.verify(self.curve, (self.x, self.y), int.from_bytes(digest, "little"), r, s)

    def verify(self, data: bytes, signature: bytes) -> bool:
        return self.verify_digest(hashes.new(self.digest, data).digest(), signature)

    def subject_public_key(self) -> bytes:
        """The bits of the certificate's subjectPublicKey: an OCTET STRING of x then y, each little-endian."""
        size = self.curve.size
        return core.OctetString(self.x.to_bytes(size, "little") + self.y.to_bytes(size, "little")).dump()

    def spki(self) -> bytes:
        """DER SubjectPublicKeyInfo, as NCA writes it."""
        return _SubjectPublicKeyInfo(
            {
                "algorithm": {"algorithm": KEY_OIDS[self.algorithm], "parameters": _key_parameters(self.algorithm)},
                "public_key": self.subject_public_key(),
            }
        ).dump()


def _key_parameters(algorithm: str) -> _KeyParameters:
    values = {"public_key_param_set": CURVE_OIDS[algorithm]}
    if algorithm == GOST2004:
        values["digest_param_set"] = HASH_PARAMETERS_2004
    return _KeyParameters(values)


def spki_algorithm(spki_der: bytes) -> str:
    """The dotted OID of a SubjectPublicKeyInfo's algorithm (whatever it is)."""
    return _SubjectPublicKeyInfo.load(spki_der)["algorithm"]["algorithm"].dotted


def is_gost(spki_der: bytes) -> bool:
    try:
        return spki_algorithm(spki_der).startswith(GOST_ARCS)
    except ValueError:
        return False


def public_key(spki_der: bytes) -> GostPublicKey:
    """The GOST key of a SubjectPublicKeyInfo; GostError says why it cannot be used."""
    try:
        spki = _SubjectPublicKeyInfo.load(spki_der)
        oid = spki["algorithm"]["algorithm"].dotted
    except ValueError as exc:
        raise GostError(f"unreadable public key ({exc})") from exc
    algorithm = KEY_ALGORITHMS.get(oid)
    if algorithm is None:
        raise GostError(f"GOST key algorithm {oid} is not one NCA RK issues (GOST 34.310-2004 or GOST 34.10-2015)")
    try:
        parameters = _KeyParameters.load(spki["algorithm"]["parameters"].dump())
        curve_oid = parameters["public_key_param_set"].dotted
        point = core.OctetString.load(spki["public_key"].native).native
    except (ValueError, TypeError, AttributeError) as exc:
        raise GostError(f"unreadable {TITLES[algorithm]} key ({exc.__class__.__name__}: {exc})") from exc
    curve = CURVES.get(curve_oid)
    if curve is None or CURVE_OIDS[algorithm] != curve_oid:
        raise GostError(f"{TITLES[algorithm]} key with parameter set {curve_oid}, which is not NCA RK's")
    size = curve.size
    if len(point) != 2 * size:
        raise GostError(f"{TITLES[algorithm]} key of {len(point)} bytes; {2 * size} expected")
    x, y = int.from_bytes(point[:size], "little"), int.from_bytes(point[size:], "little")
    if not curve.contains(x, y):
        raise GostError(f"{TITLES[algorithm]} key is not a point of its curve")
    return GostPublicKey(algorithm, curve, x, y)


def check_pairing(key: GostPublicKey, *, signature_oid: str | None = None, digest_oid: str | None = None) -> None:
    """GostError unless the signature and digest algorithms are the ones that go with this key."""
    if signature_oid is not None and signature_oid not in (KEY_OIDS[key.algorithm], SIGNATURE_OIDS[key.algorithm]):
        raise GostError(f"signature algorithm {signature_oid} does not go with a {key.title} key")
    if digest_oid is not None and DIGESTS.get(digest_oid) != key.digest:
        raise GostError(f"digest algorithm {digest_oid} does not go with a {key.title} key (it needs {DIGEST_OIDS[key.digest]})")


# ----------------------------------------------------------------------------------------------
# Keys of the test PKI (customs.pki.testing): never real ones


@dataclass(frozen=True)
class GostPrivateKey:
    algorithm: str
    d: int

    @property
    def curve(self) -> ec.Curve:
        return CURVES[CURVE_OIDS[self.algorithm]]

    @classmethod
    def generate(cls, algorithm: str) -> GostPrivateKey:
        if algorithm not in KEY_OIDS:
            raise ValueError(f"unknown GOST key algorithm {algorithm!r}: {', '.join(KEY_OIDS)}")
        return cls(algorithm, ec.new_private_key(CURVES[CURVE_OIDS[algorithm]]))

    def public_key(self) -> GostPublicKey:
        x, y = ec.public_key(self.curve, self.d)
        return GostPublicKey(self.algorithm, self.curve, x, y)

    def sign_digest(self, digest: bytes) -> bytes:
        r, s = ec.sign(self.curve, self.d, int.from_bytes(digest, "little"))
        size = self.curve.size
        return r.to_bytes(size, "little") + s.to_bytes(size, "little")

    def sign(self, data: bytes) -> bytes:
        return self.sign_digest(hashes.new(DIGEST_OF_KEY[self.algorithm], data).digest())

    def pem(self) -> bytes:
        """PKCS#8 with the key's algorithm identifier and the scalar little-endian (a test-PKI format)."""
        der = _PrivateKeyInfo(
            {
                "version": 0,
                "private_key_algorithm": {
                    "algorithm": KEY_OIDS[self.algorithm],
                    "parameters": _key_parameters(self.algorithm),
                },
                "private_key": self.d.to_bytes(self.curve.size, "little"),
            }
        ).dump()
        body = base64.encodebytes(der).replace(b"\n", b"")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return b"-----BEGIN PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n-----END PRIVATE KEY-----\n"

    @classmethod
    def from_pem(cls, pem: bytes) -> GostPrivateKey | None:
        """The key, or None when the PEM holds a key of another kind."""
        lines = [line for line in pem.strip().splitlines() if not line.startswith(b"-----")]
        try:
            info = _PrivateKeyInfo.load(base64.b64decode(b"".join(lines)))
            algorithm = KEY_ALGORITHMS.get(info["private_key_algorithm"]["algorithm"].dotted)
            if algorithm is None:
                return None
            return cls(algorithm, int.from_bytes(info["private_key"].native, "little"))
        except ValueError:
            return None
