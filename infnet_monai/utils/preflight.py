"""What a run checks before anything heavy is imported or any input is scanned: that INPUT is a file or folder that
can hold a case, that OUTPUT can be written, and that no other run holds OUTPUT (:class:`OutputLock`).

Light on purpose (no torch, no MONAI, no pydicom): the command line answers a wrong path, an empty folder or a busy
OUTPUT in a fraction of a second, and leaves no OUTPUT folder behind when it refuses.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_FILE", "OWNER_FILE", "OutputLock", "OutputLockedError", "check_input", "check_output_dir"]

LOCK_FILE = ".infnet-covid.lock"
"""Held in OUTPUT while a run writes there (by rank 0 of a torchrun job): a second run on the same OUTPUT is refused
instead of redoing every case and racing the first over its files. The operating system releases it when the process
ends, killed or not; the file itself stays and marks the folder as an output folder for later scans of the input."""
OWNER_FILE = ".infnet-covid.owner"
"""Beside the lock while a run holds it: the holder's PID, host and start time, for the refusal of a second run."""


class OutputLockedError(RuntimeError):
    """Another run is writing to the same output folder."""


def check_input(input_path: str | os.PathLike) -> Path:
    """``input_path`` as a path, once it is known to be a regular file, or a folder holding at least one file.

    Raises:
        FileNotFoundError: it does not exist (a broken link is named as one), or the folder holds no file at all.
        ValueError: it is neither a regular file nor a folder (a device such as ``/dev/zero``, a FIFO, a socket).
    """
    path = Path(input_path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"input '{path}' is a broken link (it points to '{os.readlink(path)}').") from None
        raise FileNotFoundError(f"input '{path}' does not exist.") from None
    except OSError as e:
        raise FileNotFoundError(f"input '{path}' cannot be read: {e.strerror or e}.") from e
    if stat.S_ISDIR(mode):
        if not _holds_a_file(path):
            raise FileNotFoundError(f"input folder '{path}' holds no files: nothing to segment.")
        return path
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ValueError(
            f"input '{path}' is {kind}, not a regular file or folder; give a NIfTI file, a DICOM series folder or a "
            "cohort folder."
        )
    return path


def _holds_a_file(folder: Path) -> bool:
    """Whether any folder under ``folder`` (links followed once per real folder) holds a regular file, hidden or not
    (``--strict`` makes hidden files error rows); stops at the first one."""
    seen: set[tuple[int, int]] = set()
    todo = [folder]
    while todo:
        current = todo.pop()
        try:
            st = os.stat(current)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_file():
                            return True
                        if entry.is_dir():
                            todo.append(Path(entry.path))
                    except OSError:
                        continue
        except OSError:
            continue  # an unreadable folder: discovery names it
    return False


def check_output_dir(input_path: Path, output_dir: Path) -> None:
    """Refuse an OUTPUT that is a file or the input folder itself; create it and check that files can be made in it.

    Raises:
        NotADirectoryError: ``output_dir`` exists and is not a folder.
        ValueError: ``output_dir`` is the input folder.
        PermissionError: ``output_dir`` cannot be created or written.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output '{output_dir}' exists and is not a folder.")
    if input_path.is_dir() and input_path.resolve() == output_dir.resolve():
        raise ValueError(f"output folder '{output_dir}' is the input folder; choose another so no input is overwritten.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=output_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"cannot write to output folder '{output_dir}': {e.strerror or e}.") from e


class OutputLock:
    """OUTPUT's lock, taken before the input is scanned.

    :meth:`acquire` checks OUTPUT against the input (:func:`check_output_dir`), creates it when it is missing
    (remembering that it did), takes :data:`LOCK_FILE` without
    waiting and writes :data:`OWNER_FILE`; :meth:`release` removes the owner file and lets the lock go, and removes
    the folder again when this lock created it and nothing else was written there (a refused or empty run leaves no
    OUTPUT behind).
    """

    def __init__(self, output_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.input_path = None if input_path is None else Path(input_path)
        self.created = False
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> "OutputLock":
        """Check OUTPUT (:func:`check_output_dir`, against the input given) and take the lock now, or raise
        :class:`OutputLockedError` naming the run that holds it."""
        if self._lock is not None:
            return self
        self.created = not os.path.lexists(self.output_dir)
        if self.input_path is not None:
            check_output_dir(self.input_path, self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.output_dir / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise OutputLockedError(
                f"OUTPUT '{self.output_dir}' is in use by {self.owner()} (it holds {self.output_dir / LOCK_FILE}); "
                "wait for that run to finish, or choose another output folder."
            ) from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = self.output_dir / f"{OWNER_FILE}.{os.getpid()}.part"
        try:
            tmp.write_text(json.dumps(owner), encoding="utf-8")
            os.replace(tmp, self.output_dir / OWNER_FILE)
        except BaseException:
            tmp.unlink(missing_ok=True)
            lock.release()
            raise
        self._lock = lock
        return self

    def owner(self) -> str:
        """``"PID n on HOST (since ...)"`` from the owner file of a held output folder, or a plain phrase."""
        try:
            owner = json.loads((self.output_dir / OWNER_FILE).read_text(encoding="utf-8"))
            return f"PID {owner['pid']} on {owner['host']} (since {owner['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another infnet-covid run"

    def release(self) -> None:
        if self._lock is None:
            return
        (self.output_dir / OWNER_FILE).unlink(missing_ok=True)  # while still held: no other run wrote it
        if self.created and {p.name for p in self.output_dir.iterdir()} <= {LOCK_FILE}:
            (self.output_dir / LOCK_FILE).unlink(missing_ok=True)
            self._lock.release()
            try:
                self.output_dir.rmdir()
            except OSError:  # something appeared meanwhile: it stays
                pass
        else:
            self._lock.release()
        self._lock = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
