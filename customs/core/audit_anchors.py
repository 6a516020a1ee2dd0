"""Audit anchors: the heads of the audit chains, signed with the service's key, kept outside the database.

Someone with write access to the database can drop the append-only triggers, edit an event, recompute every
later hash and the chain head, and ``customs audit verify`` would find the chain intact. An anchor is a
witness the database cannot change: the head of every chain (how many events, the hash of the last) at a
moment, signed with the service's Ed25519 key and appended as one line to a file elsewhere (and copied to
the operations-summary artifact in Prefect's database). A rewrite of an event before an anchor changes the
hash at the anchored position; a truncation removes it; either is found by comparing the database with the
anchors (``customs.services.audit_anchors``).

This module is pure: the record's format, its canonical bytes, signing a record and checking the lines of an
anchor log (signatures, numbering, each line's link to the one before). Files and the database are the
service's.

A line is the canonical JSON of::

    {"format": "customs-audit-anchor/1", "anchor": 7, "anchored_at": "2025-03-01T10:15:00.123456+00:00",
     "chains": {"office:50101": {"seq": 120, "last_hash": "…"}, ...},
     "legacy": {"seq": 0, "last_hash": "000…"},
     "previous": "<SHA-256 of the previous line's bytes; 64 zeros for the first>",
     "key": "<SHA-256 of the raw Ed25519 public key>",
     "signature": "<base64 Ed25519 signature of the canonical JSON of every other field>"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from customs.core.clock import kz_display
from models.audit import GENESIS_HASH, LEGACY_CHAIN

ANCHOR_FORMAT = "customs-audit-anchor/1"
FIRST_PREVIOUS = "0" * 64  # the "previous" of the first anchor of a log

_HEX = frozenset("0123456789abcdef")


class AnchorFormatError(ValueError):
    """A line that is not an anchor record of this format."""


@dataclass(frozen=True)
class ChainHead:
    """A chain as anchored: how many events it held and the hash of the last (``GENESIS_HASH`` for none)."""

    seq: int
    last_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "last_hash": self.last_hash}


@dataclass(frozen=True)
class Anchor:
    """One line of the anchor log, parsed (``line_hash``: the SHA-256 of its bytes, what the next line links to)."""

    number: int
    anchored_at: datetime
    chains: dict[str, ChainHead]
    legacy: ChainHead
    previous: str
    key: str
    signature: str
    line_hash: str
    # A restore anchor: the database was restored from a backup to the state after anchor ``after_anchor``; the
    # events ``lost`` ({chain: [first, last]}) are gone, and the chains go on from the heads this anchor signs.
    restored: dict[str, Any] | None = None

    def heads(self) -> dict[str, ChainHead]:
        """Every chain it anchors, the legacy chain under its name ``legacy``."""
        return {LEGACY_CHAIN: self.legacy} | self.chains


def public_key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: what each anchor names as its signer."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def pinned_fingerprint(pinned: str) -> str:
    """The SHA-256 of the key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins (given as its PEM, or as that SHA-256 already)."""
    return public_key_fingerprint(load_public_key(pinned.encode("ascii"))) if pinned.startswith("-----BEGIN") else pinned


def pinned_public_key(pinned: str) -> Ed25519PublicKey | None:
    """The pinned key itself when it was given as PEM (a SHA-256 alone cannot check a signature)."""
    return load_public_key(pinned.encode("ascii")) if pinned.startswith("-----BEGIN") else None


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def line_hash(line: bytes) -> str:
    """The SHA-256 (hex) of a line's bytes as written (without its newline): the next anchor's ``previous``."""
    return hashlib.sha256(line).hexdigest()


def _signed_fields(record: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in record.items() if k != "signature"})


def signed_anchor_line(
    key: Ed25519PrivateKey,
    *,
    number: int,
    anchored_at: datetime,
    chains: dict[str, ChainHead],
    legacy: ChainHead,
    previous: str,
    restored: dict[str, Any] | None = None,
) -> bytes:
    """The anchor's line (without its newline), signed with ``key``; ``restored``: a restore anchor's record of the
    restore (``{"after_anchor": N, "lost": {chain: [first, last]}}``)."""
    if anchored_at.tzinfo is None:
        raise ValueError("anchored_at must carry a zone")
    record: dict[str, Any] = {
        "format": ANCHOR_FORMAT,
        "anchor": number,
        "anchored_at": anchored_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "chains": {name: head.as_dict() for name, head in sorted(chains.items())},
        "legacy": legacy.as_dict(),
        "previous": previous,
        "key": public_key_fingerprint(key.public_key()),
    }
    if restored is not None:
        record["restored"] = restored
    record["signature"] = base64.b64encode(key.sign(_signed_fields(record))).decode("ascii")
    return canonical(record)


def _hash_field(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise AnchorFormatError(f"{what} is not a SHA-256 in hex")
    return value


def _head(value: Any, what: str) -> ChainHead:
    if not isinstance(value, dict) or set(value) != {"seq", "last_hash"}:
        raise AnchorFormatError(f"{what} is not {{seq, last_hash}}")
    seq = value["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise AnchorFormatError(f"{what}: seq is not a count of events")
    head = ChainHead(seq, _hash_field(value["last_hash"], f"{what}: last_hash"))
    if seq == 0 and head.last_hash != GENESIS_HASH:
        raise AnchorFormatError(f"{what}: an empty chain with a last hash")
    return head


def _record(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnchorFormatError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise AnchorFormatError("not a JSON object")
    if record.get("format") != ANCHOR_FORMAT:
        raise AnchorFormatError(f"format is not {ANCHOR_FORMAT}")
    expected = {"format", "anchor", "anchored_at", "chains", "legacy", "previous", "key", "signature"}
    wrong = (expected - set(record)) | (set(record) - expected - {"restored"})
    if wrong:
        raise AnchorFormatError("fields " + ", ".join(sorted(wrong)) + " missing or unexpected")
    return record


def _restored(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"after_anchor", "lost"}:
        raise AnchorFormatError("restored is not {after_anchor, lost}")
    after = value["after_anchor"]
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise AnchorFormatError("restored: after_anchor is not an anchor number")
    lost = value["lost"]
    if not isinstance(lost, dict) or not all(
        isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) and n > 0 for n in span) for span in lost.values()
    ):
        raise AnchorFormatError("restored: lost is not {chain: [first, last]}")
    return value


def parse_anchor(line: bytes) -> Anchor:
    """The anchor a line holds, its signature not checked (``check_anchor_log`` checks it); ``AnchorFormatError``."""
    record = _record(line)
    number = record["anchor"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise AnchorFormatError("anchor is not a number from 1")
    try:
        anchored_at = datetime.fromisoformat(record["anchored_at"])
    except (TypeError, ValueError):
        raise AnchorFormatError("anchored_at is not a time") from None
    if anchored_at.tzinfo is None:
        raise AnchorFormatError("anchored_at has no zone")
    chains = record["chains"]
    if not isinstance(chains, dict):
        raise AnchorFormatError("chains is not an object")
    if not isinstance(record["signature"], str):
        raise AnchorFormatError("signature is not a string")
    return Anchor(
        number=number,
        anchored_at=anchored_at.astimezone(UTC),
        chains={str(name): _head(head, f"chain {name}") for name, head in chains.items()},
        legacy=_head(record["legacy"], "legacy"),
        previous=_hash_field(record["previous"], "previous"),
        key=_hash_field(record["key"], "key"),
        signature=record["signature"],
        line_hash=line_hash(line),
        restored=_restored(record.get("restored")),
    )


def signature_valid(line: bytes, public_key: Ed25519PublicKey) -> bool:
    """Whether the line's signature is the key's over every other field of the line."""
    record = _record(line)
    try:
        public_key.verify(base64.b64decode(record["signature"], validate=True), _signed_fields(record))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


@dataclass
class AnchorLogCheck:
    """The anchor log's own verdict: the anchors whose signature holds (in file order), and what is wrong with it."""

    anchors: list[Anchor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_anchor_log(lines: Iterable[bytes], public_key: Ed25519PublicKey, *, name: str = "the anchor file") -> AnchorLogCheck:
    """Every line's format, its signature by ``public_key``, its number and its link to the line before.

    A line whose signature holds is authentic even when its link does not (the line before it was removed or
    altered): it is kept among ``anchors``, so the database is still checked against it. A line whose
    signature fails is reported and left out.
    """
    fingerprint = public_key_fingerprint(public_key)
    check = AnchorLogCheck()
    previous_hash = FIRST_PREVIOUS
    previous_number = 0
    for index, line in enumerate(lines, start=1):
        where = f"{name}, line {index}"
        try:
            anchor = parse_anchor(line)
        except AnchorFormatError as exc:
            check.problems.append(f"{where} is not an audit anchor: {exc}")
            previous_hash, previous_number = line_hash(line), previous_number + 1
            continue
        if anchor.key != fingerprint:
            check.problems.append(
                f"{where} (anchor {anchor.number}) names another signing key ({anchor.key[:16]}…, "
                f"not the service's {fingerprint[:16]}…)"
            )
        elif not signature_valid(line, public_key):
            check.problems.append(
                f"{where} (anchor {anchor.number}): its signature does not verify (the line was altered after it was signed)"
            )
        else:
            if anchor.previous != previous_hash:
                if anchor.number > previous_number + 1:
                    why = f"anchors {previous_number + 1}..{anchor.number - 1} were removed"
                    if anchor.number == previous_number + 2:
                        why = f"anchor {previous_number + 1} was removed"
                else:
                    why = "the line before it was removed, altered or inserted"
                check.problems.append(f"{where} (anchor {anchor.number}) does not link to the line before it: {why}")
            elif anchor.number != previous_number + 1:
                check.problems.append(f"{where} is numbered {anchor.number}, expected {previous_number + 1}")
            check.anchors.append(anchor)
        previous_hash, previous_number = anchor.line_hash, anchor.number
    return check


def described(anchor: Anchor) -> str:
    """How messages name an anchor: its number and time (Kazakhstan time)."""
    return f"anchor {anchor.number} of {kz_display(anchor.anchored_at)}"


@dataclass
class AnchoredChain:
    """What the anchors say of one chain: the hash each anchored position must have (and the first anchor that
    signed it), and the latest anchor's head."""

    positions: dict[int, tuple[str, Anchor]] = field(default_factory=dict)
    latest: tuple[ChainHead, Anchor] | None = None


def anchored_chains(anchors: Iterable[Anchor]) -> tuple[dict[str, AnchoredChain], list[str]]:
    """Per chain, the positions the anchors fix; and where the anchors contradict one another (the database was
    already rewritten or cut short between two anchors, and the later one signed that state)."""
    chains: dict[str, AnchoredChain] = {}
    problems: list[str] = []
    reported: set[str] = set()
    for anchor in anchors:  # in the log's order: the order they were written in, under the log's lock
        heads = anchor.heads()
        if anchor.restored is not None:  # a recorded restore: the chains go on from its heads, what came after is lost
            for name, chain in chains.items():
                head = heads.get(name, ChainHead(0, GENESIS_HASH))
                chain.positions = {seq: fixed for seq, fixed in chain.positions.items() if seq <= head.seq}
                chain.latest = (head, anchor)
        for name, chain in chains.items():
            if name not in heads and chain.latest is not None and chain.latest[0].seq > 0 and name not in reported:
                reported.add(name)
                problems.append(
                    f"audit chain {name} disappeared between {described(chain.latest[1])} "
                    f"({chain.latest[0].seq} events) and {described(anchor)}"
                )
        for name, head in heads.items():
            chain = chains.setdefault(name, AnchoredChain())
            if chain.latest is not None and head.seq < chain.latest[0].seq and name not in reported:
                reported.add(name)
                problems.append(
                    f"audit chain {name} was cut short between {described(chain.latest[1])} ({chain.latest[0].seq} events) "
                    f"and {described(anchor)} ({head.seq} events)"
                )
            known = chain.positions.get(head.seq)
            if head.seq > 0 and known is not None and known[0] != head.last_hash and name not in reported:
                reported.add(name)
                problems.append(
                    f"audit chain {name} was rewritten between {described(known[1])} and {described(anchor)}: "
                    f"they sign different hashes for event {head.seq} ({known[0][:16]}… and {head.last_hash[:16]}…)"
                )
            if head.seq > 0 and known is None:
                chain.positions[head.seq] = (head.last_hash, anchor)
            chain.latest = (head, anchor)
    return chains, problems
