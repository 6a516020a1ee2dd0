"""Electronic digital signatures: detached CMS (CAdES-BES, as NCALayer makes them) on the declaration
and on every supporting document.

The verifier is an interface (``SignatureVerifier``); ``CmsSignatureVerifier`` implements it with
pyHanko (CMS parsing and the signature integrity check), pyhanko-certvalidator (path building and
validation at the submission time) and ``cryptography`` (CRL signatures and look-ups). NCA RK's GOST
signatures (GOST 34.310-2004 with GOST 34.311-95, GOST 34.10-2015 with GOST 34.11-2015) go through the same
steps, with the GOST parts of ``customs.pki.gost`` where those libraries know no GOST.

Checks, each failure with a stable reason code:
  SIGNATURE_MISSING, SIGNATURE_INVALID (not CMS, not detached, or the signature value does not
  verify), DIGEST_MISMATCH, SIGNER_CERT_MISSING, SIGNATURE_ALGORITHM_UNSUPPORTED (a key, digest or pairing
  of algorithms not accepted, such as a GOST key of a kind NCA does not issue),
  WEAK_KEY, CERT_UNTRUSTED, CERT_EXPIRED, CERT_NOT_YET_VALID, CRL_MISSING, CRL_INVALID, CRL_STALE,
  CERT_REVOKED, KEY_USAGE, SIGNER_NOT_DECLARANT, WEAK_ALGORITHM (MD5 or SHA-1 as the message digest or
  in the signature algorithm).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as cv_errors

from customs.core.clock import kz_display
from customs.pki.certificates import (
    NAME_LABELS,
    SignerIdentity,
    decode_signature,
    gost_key_of,
    key_algorithm_problem,
    key_usage_problem,
    signer_identity,
)
from customs.pki.gost import algorithms as gost
from customs.pki.gost import hashes as gost_hashes
from customs.pki.gost.cms import GostSignatureValidator, signer_info_integrity
from customs.pki.pyhanko_sign import extract_certs_for_validation, extract_signer_info, validate_sig_integrity
from customs.pki.trust import TrustMaterial
from customs.rules.signers import Signer, signer_problem
from models.document import WrittenDeclarant
from models.reasons import Detail, Reason, params_of

log = logging.getLogger(__name__)

_SHA256 = hashes.SHA256()
_SIGNATURE_VALIDATOR = GostSignatureValidator()  # pyhanko-certvalidator's, with NCA's GOST certificates verified too
_HASH_IN_THREAD = 1 << 20  # bytes from which a GOST hash runs in a thread (it releases the GIL), not on the event loop


async def _hash_apart(name: str, content: bytes) -> bytes:
    if len(content) < _HASH_IN_THREAD:
        return gost_hashes.new(name, content).digest()
    return await asyncio.to_thread(lambda: gost_hashes.new(name, content).digest())


# ----------------------------------------------------------------------------------------------
# Data in and out


@dataclass(frozen=True)
class SignedDocument:
    """Bytes exactly as received and their detached signature (``None`` when none was given)."""

    label: str  # where it sits: "declaration" or "attachments[0]"
    filename: str
    content: bytes = field(repr=False)
    signature: bytes | None = field(repr=False)


@dataclass(frozen=True)
class DocumentVerdict:
    document: SignedDocument
    signer: SignerIdentity | None
    reasons: tuple[Reason, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons

    def summary(self) -> dict:
        return {
            "document": self.document.label,
            "filename": self.document.filename,
            "sha256": hashlib.sha256(self.document.content).hexdigest(),
            "valid": self.valid,
            "signer": None
            if self.signer is None
            else {
                "subject": self.signer.subject,
                "name": self.signer.name,
                "serial": self.signer.serial_hex,
                "issuer": self.signer.issuer,
                "iin": self.signer.iin,
                "bin": self.signer.bin,
                "roles": sorted(self.signer.roles),  # NCA role OIDs (customs.rules.signers): the paper copy names them
                "algorithm": self.signer.algorithm,  # "GOST 34.310-2004", "RSA 2048", ...
            },
        }


WEAK_DIGESTS = frozenset({"md2", "md4", "md5", "sha1"})
MAX_CHAIN = 6  # certificates above the signer taken from a CMS (NCA's chains have one or two)


def issuer_chain(signer, embedded: Sequence, limit: int = MAX_CHAIN) -> list:
    """Of the certificates a CMS carries, only the signer's issuer, its issuer, and so on (by name and key
    identifier, at most ``limit``), for path building.

    Path building tries every path through the certificates it is given: 20 cross-certified CA
    certificates in a 9.4 KB signature kept it busy for over 25 minutes (issue 15). A chain of the
    signer's own ancestors leaves it one candidate per step; whatever else a CMS carries is ignored."""
    chain: list = []
    current = signer
    pool = list(embedded)
    while len(chain) < limit and not current.self_issued:
        wanted_key = current.authority_key_identifier
        issuer = next(
            (c for c in pool if c.subject == current.issuer and (wanted_key is None or c.key_identifier in (None, wanted_key))),
            None,
        )
        if issuer is None:
            break
        chain.append(issuer)
        pool.remove(issuer)
        current = issuer
    return chain


def _parsed_through(certificates: list[asn1_x509.Certificate]) -> list[asn1_x509.Certificate]:
    """asn1crypto parses lazily and is not thread-safe while it does: the trust anchors and intermediates, shared by
    every clearance run's thread, are parsed to the end here, once, before any of them reads them (two runs checking
    signatures at once on a verifier just loaded got IndexError and KeyError from half-parsed certificates: the
    fault-injection suite found it, tests/unit/test_signatures.py keeps it)."""
    for cert in certificates:
        _ = cert.native  # every field, recursively
        for name in ("key_identifier", "authority_key_identifier", "self_issued", "self_signed", "sha1", "sha256"):
            getattr(cert, name)  # the values asn1crypto computes once and keeps on the object
        _ = (cert.subject.hashable, cert.issuer.hashable, cert.issuer_serial, cert.public_key.dump())
    return certificates


class SignerRule(Protocol):
    """Who may sign: the check of step 5, on what a certificate says of its holder (IIN, BIN, NCA roles).

    A declarant's documents are signed by the declarant (``DeclarantRule``); an official's acts by that official
    (customs.services.official_acts); the authority's documents by its service certificate (customs.notices).
    ``code`` is the reason code of a signer the rule refuses."""

    code: str

    def problem(self, signer: Signer) -> Detail | None: ...


@dataclass(frozen=True)
class DeclarantRule:
    """The declarant, or a head or signatory of the declarant legal entity (customs.rules.signers)."""

    declarant: WrittenDeclarant
    code: str = "SIGNER_NOT_DECLARANT"

    def problem(self, signer: Signer) -> Detail | None:
        return signer_problem(signer, declarant_iin=self.declarant.iin, declarant_bin=self.declarant.bin)


class SignatureVerifier(Protocol):
    """Verifies one signed document for a declarant (or, with ``rule``, for whoever the rule says may sign), as of
    the time it was signed or received."""

    def verify(
        self,
        document: SignedDocument,
        *,
        declarant: WrittenDeclarant | None = None,
        at: datetime,
        now: datetime,
        rule: SignerRule | None = None,
    ) -> DocumentVerdict: ...


# ----------------------------------------------------------------------------------------------
# The verifier


class CmsSignatureVerifier:
    """Detached CMS verification with pyHanko and pyhanko-certvalidator."""

    def __init__(self, trust: TrustMaterial, *, require_non_repudiation: bool = True, require_crl: bool = True):
        self.trust = trust
        self.require_non_repudiation = require_non_repudiation
        self.require_crl = require_crl
        self._roots = _parsed_through(trust.asn1_roots())
        self._intermediates = _parsed_through(trust.asn1_intermediates())
        self._chain_cache: dict[tuple, list[tuple[str, str]]] = {}

    def verify(
        self,
        document: SignedDocument,
        *,
        declarant: WrittenDeclarant | None = None,
        at: datetime,
        now: datetime,
        rule: SignerRule | None = None,
    ) -> DocumentVerdict:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.averify(document, declarant=declarant, at=at, now=now, rule=rule))
        raise RuntimeError("inside an event loop: await averify() instead")

    async def averify(
        self,
        document: SignedDocument,
        *,
        declarant: WrittenDeclarant | None = None,
        at: datetime,
        now: datetime,
        rule: SignerRule | None = None,
    ) -> DocumentVerdict:
        """``rule`` says who may sign (default: the declarant's rule for ``declarant``); exactly one of them is given."""
        if (rule is None) == (declarant is None):
            raise TypeError("give either the declarant or a signer rule")
        rule = rule or DeclarantRule(declarant)
        where = f"{document.label} ({document.filename})"

        def reason(code: str, message: str, signer: SignerIdentity | None = None, **params: str) -> Reason:
            """The stored English message as before; ``params`` (with those ``message`` carries) for translations."""
            about = f"; {signer.describe()}" if signer else ""
            values = {"document": document.filename, **params_of(message), **params}
            if signer:
                values.update(signer_subject=signer.subject, signer_serial=signer.serial_hex)
            return Reason(
                code=code, path=document.label, message=f"signature of {document.filename}: {message}{about}", params=values
            )

        if not document.signature:
            return DocumentVerdict(
                document,
                None,
                (reason("SIGNATURE_MISSING", "no signature was given; every document must be signed by the declarant"),),
            )

        # 1. The CMS parses and is a detached SignedData with one signer.
        try:
            info = asn1_cms.ContentInfo.load(decode_signature(document.signature))
            if info["content_type"].native != "signed_data":
                raise ValueError(f"content type is {info['content_type'].native}, not signed_data")
            signed_data = info["content"]
            signer_info = extract_signer_info(signed_data)
            encapsulated = signed_data["encap_content_info"]["content"]
            certs = extract_certs_for_validation(signed_data)
        except Exception as exc:  # asn1crypto raises many types on garbage
            return DocumentVerdict(
                document,
                None,
                (
                    reason(
                        "SIGNATURE_INVALID",
                        f"not a readable CMS SignedData signature ({exc.__class__.__name__}: {exc})",
                        variant="unreadable",
                    ),
                ),
            )
        if encapsulated.native is not None:
            return DocumentVerdict(
                document,
                None,
                (
                    reason(
                        "SIGNATURE_INVALID",
                        "the CMS carries its own content; a detached signature over the document is required",
                        variant="attached",
                    ),
                ),
            )
        signer_asn1 = certs.signer_cert
        if signer_asn1 is None:
            return DocumentVerdict(
                document, None, (reason("SIGNER_CERT_MISSING", "the signer's certificate is not included in the CMS"),)
            )
        cert = x509.load_der_x509_certificate(signer_asn1.dump())
        signer = signer_identity(cert)

        # 2. Algorithm and key strength: GOST is refused as unsupported, weak keys as weak.
        problem = key_algorithm_problem(cert)
        if problem:
            return DocumentVerdict(document, signer, (reason(*problem, signer=signer),))

        reasons: list[Reason] = []
        # 3. The signature covers exactly these bytes, hashed with an algorithm that still resists collisions.
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        try:
            signature_hash = signer_info["signature_algorithm"].hash_algo
        except (ValueError, KeyError):  # RSA PKCS#1 v1.5 or PSS named without a hash: the digest algorithm is it
            signature_hash = None
        weak = next((name for name in (digest_name, signature_hash) if name in WEAK_DIGESTS), None)
        if weak:
            return DocumentVerdict(
                document,
                signer,
                (
                    reason(
                        "WEAK_ALGORITHM",
                        f"the signature uses {weak.upper()}, which is refused (collisions can be made): "
                        "sign with SHA-256 or stronger",
                        signer,
                        algorithm=weak.upper(),
                    ),
                ),
            )
        gost_key = gost_key_of(cert)  # the signer's GOST key (key_algorithm_problem accepted it), None for RSA/EC
        if gost_key is not None:
            digest_oid = signer_info["digest_algorithm"]["algorithm"].dotted
            try:
                gost.check_pairing(
                    gost_key, signature_oid=signer_info["signature_algorithm"]["algorithm"].dotted, digest_oid=digest_oid
                )
            except gost.GostError as exc:
                return DocumentVerdict(
                    document,
                    signer,
                    (
                        reason(
                            "SIGNATURE_ALGORITHM_UNSUPPORTED",
                            str(exc),
                            signer,
                            variant="pairing",
                            algorithm=signer_info["signature_algorithm"]["algorithm"].dotted + " / " + digest_oid,
                            key=gost_key.title,
                        ),
                    ),
                )
            digest = await _hash_apart(gost.DIGESTS[digest_oid], document.content)
            intact, valid = signer_info_integrity(signer_info, gost_key, digest)
        else:
            try:
                digest = hashlib.new(digest_name, document.content).digest()
            except (ValueError, TypeError):
                return DocumentVerdict(
                    document,
                    signer,
                    (
                        reason(
                            "SIGNATURE_ALGORITHM_UNSUPPORTED",
                            f"digest algorithm {digest_name} is not supported",
                            signer,
                            variant="digest",
                            digest=digest_name,
                        ),
                    ),
                )
            try:
                intact, valid = validate_sig_integrity(
                    signer_info, signer_asn1, expected_content_type="data", actual_digest=digest
                )
            except Exception as exc:
                intact, valid = True, False
                log.info("%s: signature integrity check raised %r", where, exc)
        if not intact:
            reasons.append(
                reason(
                    "DIGEST_MISMATCH",
                    "the signature was made over other bytes than the document received (message digest differs)",
                    signer,
                )
            )
        elif not valid:
            reasons.append(
                reason(
                    "SIGNATURE_INVALID",
                    "the signature value does not verify with the signer's public key",
                    signer,
                    variant="value",
                )
            )

        # 4. Key usage allows signing.
        usage = key_usage_problem(cert, require_non_repudiation=self.require_non_repudiation)
        if usage:
            reasons.append(reason("KEY_USAGE", usage, signer))

        # 5. The signer may sign this: for a declarant, a legal entity's head or signatory (its BIN and an NCA role
        #    that gives the right to sign), or the person who is the declarant; for an official's act, that official.
        problem = rule.problem(Signer(signer.iin, signer.bin, signer.roles))
        if problem:
            reasons.append(reason(rule.code, problem, signer))

        # 6. Chain to a trust anchor, valid at the submission time, and not revoked then.
        for code, message in await self.chain_problems(cert, at=at, now=now, embedded=certs.other_certs):
            reasons.append(reason(code, message, signer))
        return DocumentVerdict(document, signer, tuple(reasons))

    async def chain_problems(
        self, cert: x509.Certificate, *, at: datetime, now: datetime, embedded: Sequence = ()
    ) -> list[tuple[str, Detail]]:
        """(code, message) for a certificate that does not chain to a trust anchor at ``at`` or was revoked by then.

        The answer depends only on the certificate, the certificates the CMS carried and the two times,
        so it is remembered: a declaration and its attachments signed by one certificate cost one
        path validation, not three.
        """
        embedded = issuer_chain(asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)), embedded)
        key = (cert.fingerprint(_SHA256), tuple(c.dump() for c in embedded), at, now)
        cached = self._chain_cache.get(key)
        if cached is None:
            cached = await self._chain_problems(cert, at=at, now=now, embedded=embedded)
            if len(self._chain_cache) >= 1024:
                self._chain_cache.clear()
            self._chain_cache[key] = cached
        return list(cached)

    def _no_chain(self, signer: asn1_x509.Certificate, issuer: str, embedded: Sequence) -> Detail:
        """CERT_UNTRUSTED for a certificate with no path to a trust anchor, naming the CA that is missing: the
        issuer of the last certificate the chain reaches (through the CMS's certificates and the trusted
        intermediates), not pyhanko-certvalidator's account (which names whichever certificate it tried last)."""
        reached = issuer_chain(signer, [*embedded, *self._intermediates])
        last = reached[-1] if reached else signer
        last_name = x509.load_der_x509_certificate(last.dump()).subject.rfc4514_string(NAME_LABELS)
        missing = x509.load_der_x509_certificate(last.dump()).issuer.rfc4514_string(NAME_LABELS)
        if not self._roots:
            why = "no CA certificate is trusted at all (the trust directory is not set, or holds none)"
        elif last.self_issued:
            why = f"the chain ends at the root {last_name!r}, which is not among the trusted roots"
        elif reached:
            why = (
                f"the chain reaches {last_name!r}, whose issuer {missing!r} (with that key) is not among the trusted certificates"
            )
        else:
            why = f"the signer's issuer {missing!r} (with that key) is not among the trusted certificates"
        return Detail(
            f"no chain to a trusted root: issuer {issuer!r} or its CA chain is not among the trusted certificates: {why}",
            variant="no_chain",
            issuer=issuer,
            missing=missing,
        )

    async def _chain_problems(
        self, cert: x509.Certificate, *, at: datetime, now: datetime, embedded: Sequence = ()
    ) -> list[tuple[str, Detail]]:
        signer_asn1 = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        issuer = cert.issuer.rfc4514_string(NAME_LABELS)
        context = ValidationContext(
            trust_roots=self._roots,
            other_certs=list(self._intermediates) + list(embedded),
            moment=at,
            allow_fetching=False,
            revocation_mode="soft-fail",
            signature_validator=_SIGNATURE_VALIDATOR,
        )
        validator = CertificateValidator(signer_asn1, intermediate_certs=list(embedded), validation_context=context)
        try:
            path = await validator.async_validate_path()
        except cv_errors.PathBuildingError:
            return [("CERT_UNTRUSTED", self._no_chain(signer_asn1, issuer, embedded))]
        except cv_errors.ExpiredError as exc:
            return [("CERT_EXPIRED", Detail(f"expired before the submission at {at.isoformat()} ({exc})", at=kz_display(at)))]
        except cv_errors.NotYetValidError as exc:
            return [
                ("CERT_NOT_YET_VALID", Detail(f"not yet valid at the submission at {at.isoformat()} ({exc})", at=kz_display(at)))
            ]
        except (cv_errors.PathValidationError, cv_errors.InvalidCertificateError) as exc:
            return [("CERT_UNTRUSTED", Detail(f"the certificate chain does not validate ({exc})", variant="invalid"))]
        chain = [x509.load_der_x509_certificate(c.dump()) for c in path.iter_certs(include_root=True)]
        # the chain runs from the trust anchor to the signer; each non-root certificate is checked against its issuer's CRL
        for issuer_cert, subject in itertools.pairwise(chain):
            is_signer = subject is chain[-1]
            problem = self.trust.revocation_problem(subject, issuer_cert, at=at, now=now, required=self.require_crl and is_signer)
            if problem:
                code, message = problem
                if not is_signer:
                    ca_subject = subject.subject.rfc4514_string(NAME_LABELS)
                    message = Detail(f"CA certificate {ca_subject!r}: {message}", ca_subject=ca_subject, **message.params)
                return [(code, message)]
        return []


# ----------------------------------------------------------------------------------------------
# Configured verifier (cached per trust material on disk)

_cache_lock = threading.Lock()
_cache: dict[tuple, CmsSignatureVerifier] = {}


def directory_fingerprint(directory: Path | None) -> tuple:
    if directory is None or not Path(directory).is_dir():
        return (str(directory), None)
    return (str(directory),) + tuple(
        sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in Path(directory).iterdir() if p.is_file())
    )


def configured_verifier(
    trust_dir: Path | None, crl_dir: Path | None, *, require_non_repudiation: bool, require_crl: bool
) -> CmsSignatureVerifier:
    """The verifier for these directories; reloaded only when a file in them changes."""
    key = (directory_fingerprint(trust_dir), directory_fingerprint(crl_dir), require_non_repudiation, require_crl)
    with _cache_lock:
        verifier = _cache.get(key)
        if verifier is None:
            verifier = CmsSignatureVerifier(
                TrustMaterial.load(trust_dir, crl_dir), require_non_repudiation=require_non_repudiation, require_crl=require_crl
            )
            _cache.clear()
            _cache[key] = verifier
        return verifier


def verify_documents(
    verifier: SignatureVerifier, documents: Sequence[SignedDocument], *, declarant: WrittenDeclarant, at: datetime, now: datetime
) -> list[DocumentVerdict]:
    """Verify the declaration and each attachment; every document gets its own verdict."""
    return [verifier.verify(doc, declarant=declarant, at=at, now=now) for doc in documents]
