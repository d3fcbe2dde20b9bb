"""Files that hold secrets or personal data are created private: 0600 files in 0700 folders.

HA1 digests in the subscriber store are enough to log in; CDRs and the audit log are personal
data. A process umask of 022 would leave them world-readable, so every store that creates
such a file calls :func:`private_file` before opening it (SQLite then gives its -wal/-shm/
-journal companions the same mode as the database file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_dir", "private_file"]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) as 0700; a folder we did not create keeps its mode,
    except that group/other write and read bits are removed from a folder owned by us."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    st = p.stat()
    shared = (Path.cwd().resolve(), Path.home().resolve(), Path("/tmp"))
    if (
        st.st_uid == os.getuid()
        and st.st_mode & 0o077
        and p.name not in ("", ".", "..")
        and p.resolve() not in shared
    ):
        p.chmod(stat.S_IMODE(st.st_mode) & ~0o077)
    return p


def private_file(path: str | Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created so, or tightened), in a 0700 folder.
    ``:memory:`` and other SQLite pseudo-names are returned unchanged."""
    p = Path(path)
    if str(path) in ("", ":memory:") or str(path).startswith("file:"):
        return p
    private_dir(p.parent)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = p.with_name(p.name + suffix)
        if companion.exists() and stat.S_IMODE(companion.stat().st_mode) & 0o077:
            companion.chmod(PRIVATE_FILE_MODE)
    return p
