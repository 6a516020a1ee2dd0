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
    pinned_fingerprint,
    pinned_public_key,
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
    """The service's anchor key, created (mode 0600) when there is none and no key is pinned; a key file group or
    others may read or write is refused (whoever can read it can forge anchors), and so is a key that is not the
    pinned one (CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY). With a pinned key and no key file, no new key is made: it
    would not be the pinned one, and the anchors would stop being checkable."""
    settings = settings or get_settings()
    path = settings.anchor_key_path
    pinned = pinned_fingerprint(settings.audit_anchor_public_key) if settings.audit_anchor_public_key else None
    if not path.exists():
        if pinned is not None:
            raise AnchorRefused(
                f"the audit anchor key {path} is missing, and CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins the key {pinned[:16]}…: "
                "restore the key from its backup (a new key would not be the pinned one)"
            )
        _create_exclusively(path, private_key_pem(Ed25519PrivateKey.generate()), 0o600)
    loose = _loose_mode(path)
    if loose is not None:
        raise AnchorRefused(
            f"the audit anchor key {path} is open to group or others (mode {loose:04o}): whoever reads it can forge "
            f"anchors; `chmod 600 {path}` (and consider the key compromised if others did read it)"
        )
    try:
        key = load_private_key(path.read_bytes())
    except OSError as exc:
        raise AnchorRefused(f"the audit anchor key {path} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise AnchorRefused(f"the audit anchor key {path} is not an Ed25519 key in PEM: {exc}") from None
    fingerprint = public_key_fingerprint(key.public_key())
    if pinned is not None and fingerprint != pinned:
        raise AnchorRefused(
            f"the audit anchor key {path} ({fingerprint[:16]}…) is not the key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins "
            f"({pinned[:16]}…): was the key replaced? Restore the pinned key; no anchor is signed with another"
        )
    return key


@dataclass(frozen=True)
class AnchorKey:
    """The anchor key as `customs serve` reports it at start: its SHA-256, whether it was just made, whether pinned."""

    path: Path
    fingerprint: str
    created: bool
    pinned: bool

    def lines(self) -> list[str]:
        made = "made now" if self.created else "in place"
        lines = [f"Audit anchors: key {self.path} ({made}), SHA-256 {self.fingerprint}"]
        if not self.pinned:
            lines.append(
                "Audit anchors: the key is NOT pinned; pin it in the service's configuration (not beside the key) so "
                f"that a replaced key is refused: CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY={self.fingerprint}"
            )
        return lines


def ensure_anchor_key(settings: Settings | None = None) -> AnchorKey:
    """The anchor key, made now when there is none (and none pinned), with its public half beside the anchors;
    ``AnchorRefused`` when it is missing though pinned, open to others, or not the pinned one."""
    settings = settings or get_settings()
    existed = settings.anchor_key_path.exists()
    key = signing_key(settings)
    _publish_public_key(settings, key)
    return AnchorKey(
        settings.anchor_key_path,
        public_key_fingerprint(key.public_key()),
        created=not existed,
        pinned=settings.audit_anchor_public_key is not None,
    )


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


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
    os.fsync(fd)


def _all_lines(fd: int) -> list[bytes]:
    size = os.fstat(fd).st_size
    data = b""
    while len(data) < size:
        chunk = os.pread(fd, size - len(data), len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:-1]  # the caller has seen it end with a newline


def _previous_anchor(fd: int, path: Path, fingerprint: str, settings: Settings) -> tuple[bytes | None, Anchor | None]:
    """The log's last line and its anchor (None, None for an empty log); refused when it is not one of ours."""
    last_line = _last_line(fd, path)
    if last_line is None:
        return None, None
    try:
        previous = parse_anchor(last_line)
    except AnchorFormatError as exc:
        raise AnchorRefused(
            f"the last line of the audit anchor file {path} is not an anchor ({exc}); `customs audit verify` shows what is wrong"
        ) from None
    if previous.key != fingerprint:
        raise AnchorRefused(
            f"the last anchor in {path} was signed by another key ({previous.key[:16]}…) than "
            f"{settings.anchor_key_path} ({fingerprint[:16]}…)"
        )
    return last_line, previous


def _copy_out(settings: Settings, local_fd: int, local: Path, line: bytes, number: int) -> None:
    """Append the anchor just written to the copy (CUSTOMS_AUDIT_ANCHOR_COPY_DIR), and any the copy lacks (it was
    unreachable when they were written), fsynced; the copy must be a beginning of the local file, else refused."""
    copy = settings.anchor_copy_path
    if copy is None:
        return
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        created = not copy.exists()
        fd = os.open(copy, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AnchorRefused(f"anchor {number} was written to {local} but not copied to {copy}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd, copy)
        if last is None:
            missing = _all_lines(local_fd)  # a new copy: every anchor so far
        elif line_hash(last) == parse_anchor(line).previous:
            missing = [line]
        else:
            lines = _all_lines(local_fd)
            try:
                copied = parse_anchor(last).number
            except AnchorFormatError:
                copied = 0
            if not 0 < copied < number or lines[copied - 1] != last:
                raise AnchorRefused(
                    f"anchor {number} was written to {local}, but the copy {copy} does not continue it: its last line is not "
                    f"the local file's line {copied or '?'} (one of them was altered, cut or replaced); "
                    "`customs audit verify` compares them; a person must look before copying goes on"
                )
            missing = lines[copied:]
        _write_all(fd, b"".join(m + b"\n" for m in missing))
    except OSError as exc:
        raise AnchorRefused(f"anchor {number} was written to {local} but not copied to {copy}: {exc}") from None
    finally:
        os.close(fd)
    if created:
        _fsync_dir(copy.parent)


def _behind(previous: Anchor, chains: dict[str, ChainHead], legacy: ChainHead) -> list[str]:
    """The chains the database holds fewer events of than ``previous`` signed."""
    now_heads = {LEGACY_CHAIN: legacy} | chains
    return [
        f"{name} ({now_heads.get(name, ChainHead(0, GENESIS_HASH)).seq} events, anchor {previous.number} signed {head.seq})"
        for name, head in sorted(previous.heads().items())
        if now_heads.get(name, ChainHead(0, GENESIS_HASH)).seq < head.seq
    ]


def write_anchor(
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
    when_due: bool = False,
    only_if_changed: bool = False,
    restored: dict[str, Any] | None = None,
) -> Anchor | None:
    """Sign the heads of every audit chain and append them to the anchor file (and its copy); the anchor written.

    ``when_due``: only when no anchor was written yet in the current ``audit_anchor_interval`` (None otherwise),
    as the scheduled flow asks. ``only_if_changed``: only when a chain grew (or changed) since the last anchor,
    as every job gate pass asks (None otherwise: nothing new to anchor).
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
        last_line, previous = _previous_anchor(fd, path, fingerprint, settings)
        now = now or utcnow()
        if when_due and previous is not None and not _due(previous.anchored_at, now, settings.audit_anchor_interval):
            return None
        with transaction(settings) as session:
            chains, legacy = chain_heads(session)
        if only_if_changed:
            unchanged = (
                (previous.chains, previous.legacy) == (chains, legacy)
                if previous is not None
                else legacy.seq == 0 and not any(head.seq for head in chains.values())
            )
            if unchanged:
                return None
        behind = _behind(previous, chains, legacy) if previous is not None and restored is None else []
        if behind:  # never sign a cut chain as if it were the service's state: a restore is recorded as one
            raise AnchorRefused(
                f"the database holds fewer events than the last anchor signed: {', '.join(behind)}; restored from a "
                "backup? `customs backup check` records the restore (every host does at start); otherwise the chains "
                "were cut: `customs audit verify`"
            )
        number = previous.number + 1 if previous else 1
        line = signed_anchor_line(
            key,
            number=number,
            anchored_at=now,
            chains=chains,
            legacy=legacy,
            previous=line_hash(last_line) if last_line is not None else FIRST_PREVIOUS,
            restored=restored,
        )
        _write_all(fd, line + b"\n")
        if created:
            _fsync_dir(path.parent)
        _copy_out(settings, fd, path, line, number)
    finally:
        os.close(fd)
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
    """The anchors' verdict: how many were checked (those whose signature holds), the last, what is wrong; how many
    events the database holds and how many of them no anchor covers yet."""

    file: Path
    anchors: int = 0
    last: Anchor | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    unanchored: int = 0
    copy: Path | None = None
    restore_point: RestorePoint | None = None  # the database is behind the anchors without a rewrite

    @property
    def intact(self) -> bool:
        return not self.problems


def _read_key(name: str, read, keys: list[tuple[str, Ed25519PublicKey]], result: AnchorVerification) -> None:
    try:
        keys.append((name, read()))
    except PermissionError:
        pass  # a verifier without access to the signing key checks with its public half
    except (OSError, ValueError) as exc:
        result.problems.append(f"{name} cannot be read: {exc}")


def _trusted_key(
    settings: Settings, public_key_file: Path | None, result: AnchorVerification, required: bool
) -> Ed25519PublicKey | None:
    """The public key the anchors are checked with: the pinned key (CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY), a key given on
    the command line, the signing key, the public key beside the anchors; every one of them must be the pinned key
    (or, with none pinned, the same key as the others). With anchors required, a missing signing key is a problem
    on the host that signs (a verifier elsewhere names its key with ``public_key_file``)."""
    keys: list[tuple[str, Ed25519PublicKey]] = []
    pinned = settings.audit_anchor_public_key
    if pinned is not None:
        _read_key("the pinned key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY", lambda: pinned_public_key(pinned), keys, result)
        keys = [(name, key) for name, key in keys if key is not None]
    if public_key_file is not None:
        _read_key(f"the given public key {public_key_file}", lambda: load_public_key(public_key_file.read_bytes()), keys, result)
    key_path = settings.anchor_key_path
    if key_path.exists():
        _read_key(f"the anchor key {key_path}", lambda: load_private_key(key_path.read_bytes()).public_key(), keys, result)
        loose = _loose_mode(key_path)
        if loose is not None:
            result.warnings.append(
                f"the anchor key {key_path} is open to group or others (mode {loose:04o}): whoever read it could forge anchors"
            )
    elif required and public_key_file is None:
        result.problems.append(
            f"the anchor key {key_path} is missing: no anchor can be signed, so events written from now on are not "
            "anchored (restore the key from its backup)"
        )
    published = settings.anchor_public_key_path
    if published.exists():
        _read_key(f"the anchors' public key {published}", lambda: load_public_key(published.read_bytes()), keys, result)
    if pinned is not None:
        fingerprint = pinned_fingerprint(pinned)
        for name, key in keys:
            if public_key_fingerprint(key) != fingerprint:
                result.problems.append(
                    f"{name} ({public_key_fingerprint(key)[:16]}…) is not the key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins "
                    f"({fingerprint[:16]}…): was the key replaced?"
                )
        keys = [(name, key) for name, key in keys if public_key_fingerprint(key) == fingerprint]
    elif keys and required:
        result.warnings.append(
            "no anchor key is pinned: a key and anchor file replaced together would not be noticed; set "
            f"CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY={public_key_fingerprint(keys[0][1])} in the service's configuration"
        )
    if not keys:
        return None
    first_name, first = keys[0]
    for name, other in keys[1:]:
        if pinned is None and public_key_fingerprint(other) != public_key_fingerprint(first):
            result.problems.append(f"{name} is not the same key as {first_name}")
    return first


def _log_lines(path: Path, what: str, result: AnchorVerification) -> list[bytes] | None:
    """The lines of an anchor log (None when the file is not there, or cannot be read: a problem then)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        result.problems.append(f"{what} {path} cannot be read: {exc.strerror}")
        return None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        result.problems.append(f"{what} {path} does not end with a complete line (cut short, or altered)")
    return lines


def _with_copy(local: list[Anchor], copied: list[Anchor], result: AnchorVerification, copy: Path) -> list[Anchor]:
    """The local anchors compared with the copy's; the anchors to check the database against: the local ones and
    those only the copy still holds (cut from the local file, or the file replaced)."""
    mine = {anchor.number: anchor for anchor in local}
    local_last = max(mine, default=0)
    only_copied = []
    for anchor in copied:
        kept = mine.get(anchor.number)
        if kept is None:
            only_copied.append(anchor)
        elif kept.line_hash != anchor.line_hash:
            result.problems.append(
                f"anchor {anchor.number} differs between the audit anchor file {result.file} and its copy {copy}: "
                "one of them was rewritten"
            )
    if only_copied:
        numbers = [a.number for a in only_copied]
        result.problems.append(
            f"the audit anchor file {result.file} lacks anchors {_ranges(numbers)} that its copy {copy} holds "
            f"(the file was cut short, replaced or removed; the last is {described(only_copied[-1])})"
        )
    copied_last = max((a.number for a in copied), default=0)
    if local_last > copied_last:
        result.warnings.append(
            f"the anchor copy {copy} lacks anchors {copied_last + 1}..{local_last} (it could not be reached when they "
            "were written; the next anchor copies them)"
        )
    return sorted(local + only_copied, key=lambda a: a.number)


def _ranges(numbers: list[int]) -> str:
    return f"{numbers[0]}..{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])


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


@dataclass(frozen=True)
class RestorePoint:
    """The database is an earlier state of the anchored history: every event it holds agrees with the anchors, but
    chains end before the anchors' last heads. ``after_anchor``: the last anchor it holds entirely (0: none);
    ``lost``: per chain, the events the anchors signed that it lacks."""

    after_anchor: int
    anchored_at: datetime | None
    lost: dict[str, list[int]]

    def described(self) -> str:
        where = (
            f"anchor {self.after_anchor} of {kz_display(self.anchored_at)}"
            if self.anchored_at
            else "a state before the first anchor"
        )
        spans = ", ".join(f"{name} events {first}..{last}" for name, (first, last) in sorted(self.lost.items()))
        return f"restored to {where}; events after it are missing ({spans})"

    def as_record(self) -> dict[str, Any]:
        return {"after_anchor": self.after_anchor, "lost": {name: list(span) for name, span in sorted(self.lost.items())}}


def _restore_point(
    anchors: list[Anchor], chains: dict[str, Any], heads: dict[str, ChainHead], agreeing: set[str]
) -> RestorePoint | None:
    """A restore rather than tampering: every chain agrees with the anchors up to its head (``agreeing``), and some end
    before the anchors' last heads."""
    lost = {
        name: [heads.get(name, ChainHead(0, GENESIS_HASH)).seq + 1, anchored.latest[0].seq]
        for name, anchored in chains.items()
        if anchored.latest is not None and heads.get(name, ChainHead(0, GENESIS_HASH)).seq < anchored.latest[0].seq
    }
    if not lost or set(chains) - agreeing:
        return None
    held = [a for a in anchors if all(h.seq <= heads.get(n, ChainHead(0, GENESIS_HASH)).seq for n, h in a.heads().items())]
    last = held[-1] if held else None
    return RestorePoint(last.number if last else 0, last.anchored_at if last else None, lost)


def _agrees_to_head(positions: list[tuple[int, tuple[str, Anchor]]], stored: dict[int, str], head: ChainHead | None) -> bool:
    """Whether every anchored position up to the database's head holds the anchored hash."""
    top = head.seq if head is not None else 0
    return all(stored.get(seq) == expected for seq, (expected, _) in positions if seq <= top)


def _check_database(settings: Settings, anchors: list[Anchor], result: AnchorVerification) -> None:
    chains, contradictions = anchored_chains(anchors)
    result.problems += contradictions
    problems: list[str] = []
    agreeing: set[str] = set()
    with transaction(settings) as session:
        heads, legacy = chain_heads(session)
        heads[LEGACY_CHAIN] = legacy
        for name, anchored in sorted(chains.items()):
            positions = sorted(anchored.positions.items())
            stored = _stored_hashes(session, name, [seq for seq, _ in positions]) if positions else {}
            if _agrees_to_head(positions, stored, heads.get(name)):
                agreeing.add(name)
            problem = _compare_chain(name, positions, stored, heads.get(name)) if positions else None
            if problem is not None:
                problems.append(problem)
    point = _restore_point(anchors, chains, heads, agreeing) if problems and not contradictions else None
    if point is not None:
        result.restore_point = point
        problems = [
            f"the database was {point.described()}. Every event it holds agrees with the anchors, so nothing was "
            "rewritten: it was restored from a backup (or its last events were deleted). Once an operator has "
            "confirmed the restore, `customs backup check --record-restore` signs it and the chains go on from there"
        ]
    result.problems += problems
    for anchor in anchors:
        if anchor.restored is not None:
            result.warnings.append(
                f"{described(anchor)} records a restore of the database to anchor {anchor.restored['after_anchor']}: events "
                + ", ".join(f"{name} {first}..{last}" for name, (first, last) in sorted(anchor.restored["lost"].items()))
                + " were lost with it"
            )
    last = anchors[-1].heads() if anchors else {}
    result.unanchored = sum(max(0, head.seq - (last[name].seq if name in last else 0)) for name, head in heads.items())


def verify_audit_anchors(
    settings: Settings | None = None, *, public_key_file: Path | None = None, copy: Path | None = None
) -> AnchorVerification:
    """Check the anchor log (signatures, links), compare it with its copy (``copy``, else
    CUSTOMS_AUDIT_ANCHOR_COPY_DIR's), and check the database against every anchor in either."""
    settings = settings or get_settings()
    path = settings.anchor_path
    result = AnchorVerification(file=path, copy=copy or settings.anchor_copy_path)
    with transaction(settings) as session:
        heads, legacy = chain_heads(session)
    result.events = legacy.seq + sum(head.seq for head in heads.values())
    required = settings.audit_anchor_required and result.events > 0
    public_key = _trusted_key(settings, public_key_file, result, required)
    lines = _log_lines(path, "the audit anchor file", result)
    copied = _log_lines(result.copy, "the anchor copy", result) if result.copy is not None else None
    if not lines:
        if required:
            result.problems.append(
                f"the audit anchor file {path} is missing or empty, but the database holds {result.events} audit events "
                "(anchors are required: CUSTOMS_AUDIT_ANCHOR_REQUIRED)"
            )
        elif settings.anchor_key_path.exists() or settings.anchor_public_key_path.exists() or public_key_file:
            result.problems.append(f"the audit anchor file {path} is missing or empty, but the anchor key exists")
    if result.copy is not None and not copied and (lines or required):
        result.problems.append(f"the anchor copy {result.copy} is missing or empty, but the anchors are copied there")
    if not lines and not copied:
        result.unanchored = result.events
        return result
    if public_key is None:
        result.problems.append(
            f"no key to check the audit anchors in {path} with: neither the anchor key {settings.anchor_key_path} nor "
            f"its public key {settings.anchor_public_key_path} is there, nor one pinned (give one with --public-key)"
        )
        return result
    log = check_anchor_log(lines or [], public_key, name=f"audit anchor file {path}")
    result.problems += log.problems
    anchors = log.anchors
    if copied:
        copy_log = check_anchor_log(copied, public_key, name=f"anchor copy {result.copy}")
        result.problems += copy_log.problems
        anchors = _with_copy(log.anchors, copy_log.anchors, result, result.copy)
    result.anchors = len(anchors)
    result.last = anchors[-1] if anchors else None
    _check_database(settings, anchors, result)
    return result


def restore_point(settings: Settings | None = None) -> RestorePoint | None:
    """Where the database stands when it is an earlier state of the anchored history (None otherwise)."""
    settings = settings or get_settings()
    if not settings.anchor_path.exists() and settings.anchor_copy_path is None:
        return None
    return verify_audit_anchors(settings).restore_point


def record_restore(settings: Settings | None = None, *, now: datetime | None = None) -> RestorePoint | None:
    """An operator's confirmation of a restore: when the database is an earlier state of the anchored history, sign a
    restore anchor that says so. The chains go on from the database's heads, anchoring resumes (it refuses to sign a
    state behind the last anchor), and verify names the lost events as a warning instead of failing on them.
    Nothing is written for a database that agrees with the anchors, or one that was rewritten (verify reports it).
    Deleting the last events looks the same as a restore: that is why a person confirms it, and it stays on record."""
    settings = settings or get_settings()
    point = restore_point(settings)
    if point is not None:
        write_anchor(settings, now=now, restored=point.as_record())
    return point
