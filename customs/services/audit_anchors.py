"""Audit anchors on disk: the service's signing key, the append-only anchor log, and checking the database
against the anchors (the record format and signatures: ``customs.core.audit_anchors``).

Writing (``customs audit anchor``; deadline-watch once per ``CUSTOMS_AUDIT_ANCHOR_INTERVAL``): the heads of
every chain are read in one transaction, signed, and appended as one line to the anchor file (opened with
O_APPEND, under an exclusive lock so two writers never link to the same line, fsynced before the lock is
released). The key is created on first need (mode 0600); its public half is written next to the anchors.

Checking (``customs audit verify``): every line's signature and its link to the line before; then, for each
anchored chain, the database must still hold the anchored number of events and the event at each anchored
position must carry the anchored hash. A rewrite before an anchor changes that hash, a truncation removes
the event, a rewound head counts fewer events.
"""

from __future__ import annotations

import fcntl
import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import Session, select

from customs.core.audit_anchors import (
    FIRST_PREVIOUS,
    Anchor,
    AnchorFormatError,
    ChainHead,
    anchored_chains,
    check_anchor_log,
    described,
    line_hash,
    load_private_key,
    load_public_key,
    parse_anchor,
    private_key_pem,
    public_key_fingerprint,
    public_key_pem,
    signed_anchor_line,
)
from customs.core.clock import kz_display, utcnow
from customs.core.db import transaction
from customs.core.settings import Settings, get_settings
from models.audit import GENESIS_HASH, LEGACY_CHAIN, AuditChain, AuditEvent, AuditHead


class AnchorRefused(RuntimeError):
    """Anchoring cannot go on safely (a key others may read, a key that is not the one the anchors name, a
    log whose last line is incomplete); the message says what to look at."""


# ----------------------------------------------------------------------------------------------
# The key


def _loose_mode(path: Path) -> int | None:
    """The file's permission bits when group or others have any access to it, else None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusively(path: Path, content: bytes, mode: int) -> bool:
    """Write ``path`` whole, or not at all when it exists (another process made it first): False then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and refuses to replace
        created = True
    except FileExistsError:
        created = False
    finally:
        temporary.unlink()
    _fsync_dir(path.parent)
    return created


def signing_key(settings: Settings | None = None) -> Ed25519PrivateKey:
    """The service's anchor key, created (mode 0600) when there is none; a key file group or others may read
    or write is refused: whoever can read it can forge anchors."""
    settings = settings or get_settings()
    path = settings.anchor_key_path
    if not path.exists():
        _create_exclusively(path, private_key_pem(Ed25519PrivateKey.generate()), 0o600)
    loose = _loose_mode(path)
    if loose is not None:
        raise AnchorRefused(
            f"the audit anchor key {path} is open to group or others (mode {loose:04o}): whoever reads it can forge "
            f"anchors; `chmod 600 {path}` (and consider the key compromised if others did read it)"
        )
    try:
        return load_private_key(path.read_bytes())
    except OSError as exc:
        raise AnchorRefused(f"the audit anchor key {path} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise AnchorRefused(f"the audit anchor key {path} is not an Ed25519 key in PEM: {exc}") from None


def _publish_public_key(settings: Settings, key: Ed25519PrivateKey) -> None:
    """The key's public half next to the anchors (once); a different one there means the anchors so far were
    signed with another key, and this one must not continue them."""
    path = settings.anchor_public_key_path
    pem = public_key_pem(key.public_key())
    if not path.exists() and _create_exclusively(path, pem, 0o644):
        return
    try:
        published = load_public_key(path.read_bytes())
    except OSError as exc:
        raise AnchorRefused(f"the anchors' public key {path} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise AnchorRefused(f"the anchors' public key {path} is not an Ed25519 public key in PEM: {exc}") from None
    if public_key_fingerprint(published) != public_key_fingerprint(key.public_key()):
        raise AnchorRefused(
            f"the anchors' public key {path} is not that of the anchor key {settings.anchor_key_path}: the anchors so far "
            "were signed with another key (was the key replaced?); restore the key, or start a new anchor file"
        )


# ----------------------------------------------------------------------------------------------
# The anchor log


def _last_line(fd: int, path: Path) -> bytes | None:
    """The file's last line without its newline (None for an empty file); a file that does not end with a
    newline was cut short while a line was written, or altered: refused."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    if os.pread(fd, 1, size - 1) != b"\n":
        raise AnchorRefused(
            f"the audit anchor file {path} does not end with a complete line (cut short while written, or altered); "
            "`customs audit verify` shows what is wrong; a person must look at it before anchoring goes on"
        )
    end = size - 1
    start = end
    chunk = 4096
    while start > 0:
        begin = max(0, start - chunk)
        block = os.pread(fd, start - begin, begin)
        newline = block.rfind(b"\n")
        if newline >= 0:
            start = begin + newline + 1
            break
        start = begin
    return os.pread(fd, end - start, start)


def chain_heads(session: Session) -> tuple[dict[str, ChainHead], ChainHead]:
    """The head of every office's chain and of the legacy chain, as the database holds them now."""
    chains = {row.chain: ChainHead(row.seq, row.last_hash) for row in session.exec(select(AuditChain)).all()}
    head = session.get(AuditHead, 1)
    legacy = ChainHead(head.seq, head.last_hash) if head is not None else ChainHead(0, GENESIS_HASH)
    return chains, legacy


def _due(last: datetime, now: datetime, interval: timedelta) -> bool:
    """Whether ``now`` is in a later interval than ``last`` (intervals counted from the Unix epoch, so a 15-minute
    interval starts at :00, :15, :30 and :45 whatever minute the scheduled runs happen to start)."""
    step = interval.total_seconds()
    return math.floor(now.timestamp() / step) > math.floor(last.timestamp() / step)


def write_anchor(settings: Settings | None = None, *, now: datetime | None = None, when_due: bool = False) -> Anchor | None:
    """Sign the heads of every audit chain and append them to the anchor file; the anchor written.

    ``when_due``: only when no anchor was written yet in the current ``audit_anchor_interval`` (None otherwise),
    as the scheduled flow asks.
    """
    settings = settings or get_settings()
    key = signing_key(settings)
    fingerprint = public_key_fingerprint(key.public_key())
    _publish_public_key(settings, key)
    path = settings.anchor_path
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
        last_line = _last_line(fd, path)
        previous = None
        if last_line is not None:
            try:
                previous = parse_anchor(last_line)
            except AnchorFormatError as exc:
                raise AnchorRefused(
                    f"the last line of the audit anchor file {path} is not an anchor ({exc}); "
                    "`customs audit verify` shows what is wrong"
                ) from None
            if previous.key != fingerprint:
                raise AnchorRefused(
                    f"the last anchor in {path} was signed by another key ({previous.key[:16]}…) than "
                    f"{settings.anchor_key_path} ({fingerprint[:16]}…)"
                )
        now = now or utcnow()
        if when_due and previous is not None and not _due(previous.anchored_at, now, settings.audit_anchor_interval):
            return None
        with transaction(settings) as session:
            chains, legacy = chain_heads(session)
        line = signed_anchor_line(
            key,
            number=previous.number + 1 if previous else 1,
            anchored_at=now,
            chains=chains,
            legacy=legacy,
            previous=line_hash(last_line) if last_line is not None else FIRST_PREVIOUS,
        )
        data = line + b"\n"
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)
    return parse_anchor(line)


def latest_anchor(settings: Settings | None = None) -> dict[str, Any] | None:
    """The last anchor of the log as the operations summary shows it (its signature not checked: that is
    `customs audit verify`'s); None when there is none, ``{"error": ...}`` when it cannot be read."""
    settings = settings or get_settings()
    path = settings.anchor_path
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"file": str(path), "error": f"cannot read {path}: {exc.strerror}"}
    try:
        line = _last_line(fd, path)
        if line is None:
            return None
        anchor = parse_anchor(line)
    except (AnchorRefused, AnchorFormatError) as exc:
        return {"file": str(path), "error": str(exc)}
    finally:
        os.close(fd)
    return {
        "file": str(path),
        "anchor": anchor.number,
        "anchored_at": anchor.anchored_at.isoformat(),
        "anchored_at_kz": kz_display(anchor.anchored_at),
        "chains": [{"chain": name, "seq": head.seq, "last_hash": head.last_hash} for name, head in anchor.heads().items()],
        "previous": anchor.previous,
        "key": anchor.key,
        "signature": anchor.signature,
        "line": line.decode("utf-8"),
    }


# ----------------------------------------------------------------------------------------------
# Checking


@dataclass
class AnchorVerification:
    """The anchors' verdict: how many were checked (those whose signature holds), the last, what is wrong."""

    file: Path
    anchors: int = 0
    last: Anchor | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def _trusted_key(
    settings: Settings, public_key_file: Path | None, result: AnchorVerification
) -> tuple[Ed25519PublicKey | None, str | None]:
    """The public key the anchors are checked with, and why anchors are expected (None: they may be absent).

    A key given on the command line comes first (a copy kept elsewhere), then the signing key, then the public
    key next to the anchors; whichever of them exist must be the same key.
    """
    keys: list[tuple[str, Ed25519PublicKey]] = []
    expected = "CUSTOMS_AUDIT_ANCHOR_REQUIRED is set" if settings.audit_anchor_required else None
    if public_key_file is not None:
        expected = expected or f"the public key {public_key_file} was given"
        try:
            keys.append((f"the given public key {public_key_file}", load_public_key(public_key_file.read_bytes())))
        except (OSError, ValueError) as exc:
            result.problems.append(f"the given public key {public_key_file} cannot be read: {exc}")
    key_path = settings.anchor_key_path
    if key_path.exists():
        expected = expected or f"the anchor key {key_path} exists"
        try:
            keys.append((f"the anchor key {key_path}", load_private_key(key_path.read_bytes()).public_key()))
        except PermissionError:
            pass  # a verifier without access to the key checks with its public half
        except (OSError, ValueError) as exc:
            result.problems.append(f"the anchor key {key_path} cannot be read: {exc}")
        loose = _loose_mode(key_path)
        if loose is not None:
            result.warnings.append(
                f"the anchor key {key_path} is open to group or others (mode {loose:04o}): whoever read it could forge anchors"
            )
    published_path = settings.anchor_public_key_path
    if published_path.exists():
        expected = expected or f"the anchors' public key {published_path} exists"
        try:
            keys.append((f"the anchors' public key {published_path}", load_public_key(published_path.read_bytes())))
        except (OSError, ValueError) as exc:
            result.problems.append(f"the anchors' public key {published_path} cannot be read: {exc}")
    if not keys:
        return None, expected
    first_name, first = keys[0]
    for name, other in keys[1:]:
        if public_key_fingerprint(other) != public_key_fingerprint(first):
            result.problems.append(f"{name} is not the same key as {first_name}")
    return first, expected


def _stored_hashes(session: Session, chain: str, positions: list[int]) -> dict[int, str]:
    """The hash of the event at each of these positions of the chain, for those that exist."""
    found: dict[int, str] = {}
    for start in range(0, len(positions), 500):
        chunk = positions[start : start + 500]
        if chain == LEGACY_CHAIN:  # legacy events are positioned by their system-wide number
            query = select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.chain.is_(None), AuditEvent.seq.in_(chunk))
        else:
            query = select(AuditEvent.chain_seq, AuditEvent.hash).where(
                AuditEvent.chain == chain, AuditEvent.chain_seq.in_(chunk)
            )
        found.update(dict(session.execute(query).all()))
    return found


def _compare_chain(
    name: str, positions: list[tuple[int, tuple[str, Anchor]]], stored: dict[int, str], head: ChainHead | None
) -> str | None:
    """What the database's chain ``name`` contradicts in the anchors, if anything (the first such position)."""
    agreed: tuple[int, Anchor] | None = None
    for seq, (expected, anchor) in positions:
        digest = stored.get(seq)
        if digest is None:
            held = f"its head says {head.seq} events" if head is not None else "its head is gone"
            return (
                f"audit chain {name} was cut short: event {seq}, signed by {described(anchor)}, is missing from the "
                f"database ({held}; the anchors signed {positions[-1][0]})"
            )
        if digest != expected:
            since = (
                f"it still agrees with {described(agreed[1])} at event {agreed[0]}, so events {agreed[0] + 1}..{seq} were changed"
                if agreed is not None
                else f"events 1..{seq} were changed"
            )
            return (
                f"audit chain {name} was rewritten: event {seq} has hash {digest[:16]}… in the database, {described(anchor)} "
                f"signed {expected[:16]}…; {since}"
            )
        agreed = (seq, anchor)
    top, (_, anchor) = positions[-1]
    if head is None or head.seq < top:
        held = f"its head says {head.seq} events" if head is not None else "its head is gone"
        return f"audit chain {name} was cut short: {held}, {described(anchor)} signed {top}"
    return None


def verify_audit_anchors(settings: Settings | None = None, *, public_key_file: Path | None = None) -> AnchorVerification:
    """Check the anchor log (signatures, links) and the database against every anchor in it."""
    settings = settings or get_settings()
    path = settings.anchor_path
    result = AnchorVerification(file=path)
    public_key, expected = _trusted_key(settings, public_key_file, result)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        result.problems.append(f"the audit anchor file {path} cannot be read: {exc.strerror}")
        return result
    if not data:
        if expected is not None:
            result.problems.append(f"the audit anchor file {path} is missing or empty, but anchors were expected: {expected}")
        return result
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        result.problems.append(f"the audit anchor file {path} does not end with a complete line (cut short, or altered)")
    if public_key is None:
        result.problems.append(
            f"no key to check the audit anchors in {path} with: neither the anchor key {settings.anchor_key_path} nor "
            f"its public key {settings.anchor_public_key_path} is there (give one with --public-key)"
        )
        return result
    log = check_anchor_log(lines, public_key, name=f"audit anchor file {path}")
    result.problems += log.problems
    result.anchors = len(log.anchors)
    result.last = log.anchors[-1] if log.anchors else None
    chains, contradictions = anchored_chains(log.anchors)
    result.problems += contradictions
    with transaction(settings) as session:
        heads, legacy = chain_heads(session)
        heads[LEGACY_CHAIN] = legacy
        for name, anchored in sorted(chains.items()):
            positions = sorted(anchored.positions.items())
            if not positions:
                continue
            stored = _stored_hashes(session, name, [seq for seq, _ in positions])
            problem = _compare_chain(name, positions, stored, heads.get(name))
            if problem is not None:
                result.problems.append(problem)
    return result
