"""Files crmhub keeps on disk (data dir, SQLite database, keyring, signing key, checkpoint journal)
are private to its user, whatever the umask.

* :func:`private_dir` creates missing directories with mode 0700. It never changes a directory that
  already exists (a database may live in a shared directory such as ``/tmp``).
* :func:`tighten` takes group/other bits off a file crmhub owns (its database and WAL files).
* :func:`create_private` creates a file with mode 0600 (``O_EXCL``: fails if it exists);
  :func:`append_private` appends one record to a 0600 file under an exclusive ``flock``.
* :func:`refuse_if_shared` raises :class:`ConfigError` naming the ``chmod`` fix when a secret file
  is readable or writable by group/others.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from schemas.errors import ConfigError

__all__ = ["append_private", "create_private", "private_dir", "refuse_if_shared", "tighten"]

_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700; existing directories are left as they are."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, _PRIVATE_DIR)
        except FileExistsError:
            continue  # another process created it first
        os.chmod(folder, _PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    return path


def tighten(path: Path) -> None:
    """Remove group/other permission bits of an existing file crmhub owns (no-op if absent)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def create_private(path: Path) -> int:
    """Create ``path`` (not existing yet) with mode 0600 and return a write descriptor."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    os.fchmod(fd, _PRIVATE_FILE)
    return fd


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600 if missing) atomically with respect to other
    appenders (exclusive ``flock``), and fsync it before returning."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, _PRIVATE_FILE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def refuse_if_shared(path: Path, what: str) -> None:
    """:class:`ConfigError` if ``path`` is accessible by group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{what} {path} is accessible by group/others (mode {mode:04o}); fix with: chmod 600 {path}"
        )
