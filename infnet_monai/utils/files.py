"""Atomic file writing: a reader never sees a half-written output, even after a crash, Ctrl-C or a power loss (the
content is synced to the disk before the rename that publishes it, and the rename after)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "file_sha256"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file keeps ``path``'s suffixes (``.nii.gz``, ``.png``, ...) so writers that pick the format from
    the name work. It is removed if ``write`` fails or the process is interrupted.

    Args:
        path: destination file (its folder is created).
        write: writes the content to the path it is given.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates the file readable by its owner only; give it the permissions of a normally created file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp)  # the content on the disk before the name: a power loss never leaves an empty file under it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, folder=True)  # and the rename itself
    return path


def _fsync(path: str | os.PathLike, folder: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; a file system that cannot sync a folder is let
    be."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks: what ``sha256sum`` prints."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
