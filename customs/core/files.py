"""The service's files are its user's alone: the data directory (SQLite databases, Prefect's home with its
database and the key that decrypts its block secrets, logs, keys, tokens, the .eml outbox) is 0700, every file in
it 0600.

``private_files()`` is called where the service starts (the CLI's entry, ``customs serve``, the Prefect server's
start, a worker): the umask 0o077 makes everything created afterwards, by this process and the processes it
starts (the Prefect server and its SQLite files), private; ``tighten_data_dir`` takes group and others' rights
from what an earlier release left readable.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Files and directories created from now on by this process (and its children) are its user's only."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` (and its missing parents) as a directory only its owner may enter."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o077)
    return path


def tighten_data_dir(root: Path) -> int:
    """Take group and others' rights from ``root`` and everything under it (never following a symbolic link);
    returns how many modes changed. Creates ``root`` (0700) when missing."""
    private_dir(root)
    changed = 0
    for directory, subdirectories, files in os.walk(root):
        for name in [*subdirectories, *files]:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:  # removed meanwhile (a run's temporary file)
                continue
            if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
                continue
            try:
                os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)
                changed += 1
            except FileNotFoundError:
                continue
    return changed


def open_private(path: Path, mode: str = "ab"):
    """``path`` opened for writing, created 0600 (a log file: the server's, a background run's)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, mode)


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path`` (one line), or a new one from ``make()`` written there with mode 0600 (the first
    of two processes racing wins; the other reads what it wrote)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    value = make()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    try:
        os.link(temporary, path)  # whole or not at all, and never over another process's
    except FileExistsError:
        value = path.read_text(encoding="utf-8").strip()
    finally:
        temporary.unlink()
    return value
