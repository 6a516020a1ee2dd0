"""Who may sign for a declarant: the rule that ties a signer's NCA RK certificate to the declarant.

NCA RK writes the holder's IIN in SERIALNUMBER, the legal entity's BIN in OU, and the holder's role in the
extended key usage (order of the Minister of Digital Development of 2020, adilet V2000021440; the real test
certificates in ../shared/fixtures/nca-real/ carry them):

- 1.2.398.3.3.4.1.1   an individual (физическое лицо);
- 1.2.398.3.3.4.1.2   a legal entity's certificate, with one role below it:
  - .1 the first head (первый руководитель), .2 a person with the right to sign (лицо, наделённое правом
    подписи), .3 the right to sign financial documents, .4 HR, .5 an employee (сотрудник).

A customs declaration of a legal entity is signed by its head or by a person it gave the right to sign:
the certificate must carry the declarant's BIN and one of those two roles. A person's declaration is
signed by that person: the certificate's IIN is the declarant's. Anything else is SIGNER_NOT_DECLARANT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from models.reasons import Detail

INDIVIDUAL = "1.2.398.3.3.4.1.1"
LEGAL_ENTITY = "1.2.398.3.3.4.1.2"
FIRST_HEAD = "1.2.398.3.3.4.1.2.1"
SIGNING_RIGHT = "1.2.398.3.3.4.1.2.2"
FINANCIAL_SIGNING_RIGHT = "1.2.398.3.3.4.1.2.3"
HR = "1.2.398.3.3.4.1.2.4"
EMPLOYEE = "1.2.398.3.3.4.1.2.5"

ROLE_NAMES = {
    INDIVIDUAL: "individual",
    LEGAL_ENTITY: "legal entity",
    FIRST_HEAD: "first head",
    SIGNING_RIGHT: "person with the right to sign",
    FINANCIAL_SIGNING_RIGHT: "right to sign financial documents",
    HR: "HR employee",
    EMPLOYEE: "employee",
}
MAY_SIGN_FOR_ENTITY = frozenset({FIRST_HEAD, SIGNING_RIGHT})


@dataclass(frozen=True)
class Signer:
    """What the rule reads of a certificate: IIN, BIN and the NCA role OIDs of its extended key usage."""

    iin: str | None
    bin: str | None
    roles: frozenset[str] = frozenset()

    def describe(self) -> str:
        ids = ", ".join(f"{k} {v}" for k, v in (("IIN", self.iin), ("BIN", self.bin)) if v) or "no IIN or BIN"
        named = [ROLE_NAMES[r] for r in sorted(self.roles) if r in ROLE_NAMES and r not in (LEGAL_ENTITY,)]
        return f"{ids} (NCA role: {', '.join(named) or 'none'})"


def signer_problem(signer: Signer, *, declarant_iin: str | None, declarant_bin: str | None) -> Detail | None:
    """Why this signer may not sign for this declarant, or ``None`` when it may.

    A BIN written in the declaration makes it a legal entity's declaration, whatever else is written:
    only the entity's head or a person with its right to sign may sign it (an IIN that matches is not
    enough: a private person's certificate never speaks for a company)."""
    ids = {"signer_iin": signer.iin or "—", "signer_bin": signer.bin or "—"}
    if declarant_bin:
        if signer.bin != declarant_bin:
            return Detail(
                f"signed by {signer.describe()}, but the declarant is the legal entity BIN {declarant_bin}: "
                "the certificate must be issued for that BIN",
                variant="bin_mismatch",
                declarant_bin=declarant_bin,
                **ids,
            )
        if not (signer.roles & MAY_SIGN_FOR_ENTITY):
            return Detail(
                f"signed by {signer.describe()}: the certificate does not give the right to sign for BIN {declarant_bin} "
                "(NCA issues that right to the first head, 1.2.398.3.3.4.1.2.1, and to persons with the right to sign, "
                "1.2.398.3.3.4.1.2.2)",
                variant="no_signing_right",
                declarant_bin=declarant_bin,
                **ids,
            )
        return None
    if declarant_iin:
        if signer.iin != declarant_iin:
            return Detail(
                f"signed by {signer.describe()}, not by the declarant (IIN {declarant_iin})",
                variant="iin_mismatch",
                declarant_iin=declarant_iin,
                **ids,
            )
        return None
    return Detail("the declaration names no declarant IIN or BIN to compare the signer with", variant="no_declarant_id")


@dataclass(frozen=True)
class AuthorityRule:
    """Who signs what the authority sends (decision.json, paper copies): its service certificate, a legal entity
    certificate of the authority's BIN with no IIN in it. An official's own certificate (an employee of the
    authority: its IIN and the authority's BIN) signs that official's acts, never the authority's documents; a
    declarant's or anyone else's certificate never does. A signer rule of customs.pki.verify."""

    authority_bin: str
    code: str = "SIGNER_NOT_AUTHORITY"

    def problem(self, signer: Signer) -> Detail | None:
        ids = {"signer_iin": signer.iin or "—", "signer_bin": signer.bin or "—", "authority_bin": self.authority_bin}
        if signer.bin != self.authority_bin:
            return Detail(
                f"signed by {signer.describe()}, not by the revenue authority (BIN {self.authority_bin}): "
                "only the authority's service certificate signs its documents",
                variant="other_entity",
                **ids,
            )
        if signer.iin:
            return Detail(
                f"signed by {signer.describe()}: a person's certificate (IIN {signer.iin}) of the authority, not its "
                "service certificate (a legal entity certificate with no IIN)",
                variant="person",
                **ids,
            )
        if LEGAL_ENTITY not in signer.roles:
            return Detail(
                f"signed by {signer.describe()}: the certificate is not a legal entity certificate "
                f"(NCA's {LEGAL_ENTITY} is missing from its extended key usage)",
                variant="not_legal_entity",
                **ids,
            )
        return None


@dataclass(frozen=True)
class CertificateHolder:
    """Whom a certificate names, as a person reads it: the holder (CN), the organisation (O) when it is not the
    holder itself, and the IIN and BIN NCA RK writes in SERIALNUMBER and OU (``IIN…``, ``BIN…``)."""

    name: str | None = None
    organisation: str | None = None
    iin: str | None = None
    bin: str | None = None

    @property
    def shown_name(self) -> str | None:
        """``ТОО «Алатау Импорт»``, ``ИВАНОВ ИВАН (ТОО «Алатау Импорт»)``; ``None`` with neither CN nor O."""
        if self.name and self.organisation and self.organisation != self.name:
            return f"{self.name} ({self.organisation})"
        return self.name or self.organisation


# The labels customs.pki.certificates writes a name with (rfc4514_string(NAME_LABELS)), to read it back
_NAME_LABELS = {"SERIALNUMBER": NameOID.SERIAL_NUMBER, "G": NameOID.GIVEN_NAME, "SN": NameOID.SURNAME}


def holder_of(subject: str) -> CertificateHolder:
    """The holder of a certificate from its subject as stored (an RFC 4514 string, ``C=KZ,...,CN=...``); an empty
    holder when the text is no such name. Letters name a certificate by this and its serial, never by the DN."""
    try:
        name = x509.Name.from_rfc4514_string(subject, _NAME_LABELS)
    except ValueError:
        return CertificateHolder()

    def first(oid) -> str | None:
        values = [str(a.value).strip() for a in name.get_attributes_for_oid(oid)]
        return next((v for v in values if v), None)

    def number(oid, prefix: str) -> str | None:
        for attribute in name.get_attributes_for_oid(oid):
            match = re.fullmatch(rf"{prefix}(\d{{12}})", str(attribute.value))
            if match:
                return match.group(1)
        return None

    return CertificateHolder(
        name=first(NameOID.COMMON_NAME),
        organisation=first(NameOID.ORGANIZATION_NAME),
        iin=number(NameOID.SERIAL_NUMBER, "IIN"),
        bin=number(NameOID.ORGANIZATIONAL_UNIT_NAME, "BIN"),
    )
