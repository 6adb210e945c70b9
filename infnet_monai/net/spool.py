"""The DICOM node's spool: received instances on disk, grouped by study and series, until their series is segmented;
the studies that pull mode retrieves; and the results still to be sent (the outbox).

Layout (every name under ``SPOOL`` is a fixed word, a hash, or a UID checked by
:func:`~infnet_monai.net.peers.check_uid`, so no instance can make the spool write outside its folder, whatever UIDs or
names it carries)::

    SPOOL/.infnet-spool.lock                  held by the one process that uses the spool
    SPOOL/tmp/                                instances being written (emptied at start)
    SPOOL/incoming/<study>/<series>/<sop>.dcm series still receiving
    SPOOL/incoming/<study>/<series>.json      who sent it, when it began
    SPOOL/queue/<study>/<series>/             complete (no instance for the idle time): waiting, or being segmented
    SPOOL/done/<study>/<series>/              segmented; kept for late instances, then removed
    SPOOL/failed/<study>/<series>/            never completed (timed out); kept as long as a segmented series
    SPOOL/pull/<study>/<sop>.dcm              a study retrieved by pull mode, until it is segmented
    SPOOL/outbox/<destination>/<sop>.dcm      results not yet sent (``destination.json`` says where to)

An instance is written to ``tmp/``, synced, and renamed into its series folder: a reader (or a restart) never sees
half an instance. A series moves between states by renaming its folder, so every state survives a restart: a series
in ``incoming/`` completes once its folder has been left alone for the idle time (its modification time is the
arrival of its last instance), one in ``queue/`` is segmented, the outbox is sent.

Space: the spool keeps below ``max_bytes`` and leaves :data:`MIN_FREE_BYTES` free on its disk. When an instance would
not fit, segmented and failed series are removed first (oldest first); if it still does not fit it is refused
(:class:`SpoolFullError`) and nothing already spooled is touched. Results always enter the outbox.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from infnet_monai.defaults import NODE_MAX_SPOOL_GB
from infnet_monai.net.peers import Peer, check_uid
from infnet_monai.utils.files import atomic_write
from infnet_monai.utils.preflight import OutputLockedError

__all__ = [
    "DEFAULT_MAX_SPOOL_BYTES",
    "DONE_RETENTION_S",
    "MIN_FREE_BYTES",
    "SPOOL_LOCK",
    "Outbox",
    "SeriesEntry",
    "Spool",
    "SpoolFullError",
    "SpoolLockedError",
    "default_spool",
]

logger = logging.getLogger(__name__)

SPOOL_LOCK = ".infnet-spool.lock"
"""Held in SPOOL by the process that uses it: a second node (or pull run) on the same spool is refused."""
DEFAULT_MAX_SPOOL_BYTES = int(NODE_MAX_SPOOL_GB * 2**30)
"""Default bound of the spool (:data:`~infnet_monai.defaults.NODE_MAX_SPOOL_GB`): dozens of thin-slice chest CTs."""
MIN_FREE_BYTES = 256 * 2**20
"""Free space the spool leaves on its disk whatever its bound, for the outputs, the log and the system."""
DONE_RETENTION_S = 3600.0
"""How long a segmented (or failed) series stays in the spool: an instance of it that arrives later makes the whole
series be segmented again, not the late instances alone. Removed earlier when the spool needs the room."""

_STATES = ("incoming", "queue", "done", "failed")
_DESTINATION_FILE = "destination.json"


def default_spool(output_dir: str | os.PathLike) -> Path:
    """The spool of an OUTPUT when ``--spool`` is not given: ``OUTPUT.spool`` beside it (never inside it: the runner
    does not read inputs under OUTPUT)."""
    output = Path(output_dir).expanduser().resolve()
    return output.with_name(f"{output.name}.spool")


class SpoolFullError(OSError):
    """The spool has no room for an instance (its bound, or the free space of its disk)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class SpoolLockedError(OutputLockedError):
    """Another process uses the spool (the command line answers it like a busy OUTPUT: exit 2)."""


@dataclass
class SeriesEntry:
    """A spooled series.

    Attributes:
        study_uid: its StudyInstanceUID.
        series_uid: its SeriesInstanceUID (the name of its folder, and so the case id of its outputs).
        folder: the folder holding its instances.
        meta: ``callers`` (``"AE@address"`` of every association that sent instances of it), ``first`` (arrival of
            its first instance, seconds since the epoch), ``interrupted`` (an association that sent some of it ended
            with an abort), ``finished`` (when it was segmented).
    """

    study_uid: str
    series_uid: str
    folder: Path
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.study_uid, self.series_uid

    def instance_count(self) -> int:
        return sum(1 for p in self.folder.glob("*.dcm"))


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (a file or a folder); 0 when it is gone."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system that cannot sync a folder
    finally:
        os.close(fd)


class Spool:
    """The spool folder of one node (see the module docstring for its layout).

    Args:
        root: the spool folder (created if missing); it must lie outside OUTPUT and the input.
        max_bytes: bound of everything under ``root``.
        min_free_bytes: free space left on the disk of ``root``.
        keep_seconds: how long segmented and failed series stay (:data:`DONE_RETENTION_S`).

    All methods are safe to call from several threads (the SCP's associations and the node's worker).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        min_free_bytes: int = MIN_FREE_BYTES,
        keep_seconds: float = DONE_RETENTION_S,
    ) -> None:
        if int(max_bytes) <= 0:
            raise ValueError(f"the spool bound must be > 0 bytes, got {max_bytes}.")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.RLock()
        self._file_lock: FileLock | None = None
        self._used = 0
        self._active: set[tuple[str, str]] = set()
        self.outbox = Outbox(self)

    # ------------------------------------------------------------------ life
    def open(self) -> "Spool":
        """Take the spool's lock, make its folders, remove what a killed process left in ``tmp/`` and count its
        bytes.

        Raises:
            SpoolLockedError: another process uses the spool.
            NotADirectoryError: ``root`` exists and is not a folder.
            PermissionError: the folder cannot be created or written.
        """
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"spool '{self.root}' exists and is not a folder.")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / SPOOL_LOCK))
            lock.acquire(timeout=0)
        except Timeout:
            raise SpoolLockedError(
                f"spool '{self.root}' is in use by another infnet-covid process (it holds {self.root / SPOOL_LOCK}); "
                "stop it, or give this one its own --spool."
            ) from None
        except OSError as e:
            raise PermissionError(f"cannot use spool folder '{self.root}': {e.strerror or e}.") from e
        self._file_lock = lock
        for name in ("tmp", "pull", "outbox") + _STATES:
            (self.root / name).mkdir(exist_ok=True)
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        for stale in self.root.rglob(".*.part*"):  # meta files an interrupted atomic write left
            stale.unlink(missing_ok=True)
        self._used = _tree_bytes(self.root)
        return self

    def __enter__(self) -> "Spool":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Let the spool's lock go; what the spool holds stays for the next :meth:`open`."""
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    @property
    def used_bytes(self) -> int:
        """Bytes under the spool, as counted since :meth:`open`."""
        return self._used

    # ------------------------------------------------------------------ room
    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _fits(self, size: int) -> bool:
        return self._used + size <= self.max_bytes and self._free_bytes() - size >= self.min_free_bytes

    def has_room(self, size: int = 0) -> bool:
        """Whether ``size`` more bytes fit, after removing segmented and failed series if needed."""
        with self._lock:
            return self._fits(size) or self._evict(size)

    def _evict(self, size: int, now: float | None = None, expired_only: bool = False) -> bool:
        """Remove segmented and failed series, oldest first: those older than ``keep_seconds`` (``expired_only``),
        or as many as it takes for ``size`` bytes to fit; whether they fit then."""
        now = time.time() if now is None else now
        candidates = []
        for state in ("done", "failed"):
            for entry in self._entries(state):
                finished = float(entry.meta.get("finished") or entry.folder.stat().st_mtime)
                candidates.append((finished, state, entry))
        for finished, state, entry in sorted(candidates, key=lambda c: c[0]):
            if expired_only and now - finished < self.keep_seconds:
                break
            if not expired_only and self._fits(size):
                break
            self._remove(entry)
            why = "kept its time" if expired_only else "room needed"
            logger.info("series %s: removed from the spool (%s)", entry.series_uid, why)
        return self._fits(size)

    def remove_expired(self, now: float | None = None) -> None:
        """Remove segmented and failed series kept longer than ``keep_seconds``."""
        with self._lock:
            self._evict(0, now, expired_only=True)

    def _full_error(self, size: int) -> SpoolFullError:
        free = self._free_bytes()
        if self._used + size > self.max_bytes:
            why = f"it holds {self._used / 2**30:.2f} GB of its {self.max_bytes / 2**30:.2f} GB bound (--max-spool-gb)"
        else:
            why = f"its disk has {free / 2**20:.0f} MB free, under the {self.min_free_bytes / 2**20:.0f} MB kept free"
        return SpoolFullError(f"spool '{self.root}' is full: {why}; the instance was refused, nothing spooled was lost")

    # ------------------------------------------------------------------ receiving
    def _write_tmp(self, data: bytes) -> Path:
        fd, tmp = tempfile.mkstemp(prefix="instance.", suffix=".part", dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full_error(len(data)) from e
            raise
        return Path(tmp)

    def _place(self, tmp: Path, target: Path) -> None:
        """Rename ``tmp`` onto ``target`` (counting the bytes) and sync the folder: the instance is on the disk."""
        old = target.stat().st_size if target.is_file() else 0
        size = tmp.stat().st_size
        os.replace(tmp, target)
        _fsync_folder(target.parent)
        self._used += size - old

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str, caller: str) -> Path:
        """Spool one received instance (``data``: a DICOM file, preamble and file meta included) under its study and
        series; an instance with the same SOP Instance UID replaces the earlier one.

        Args:
            data: the encoded instance.
            study_uid, series_uid, sop_uid: its StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID.
            caller: ``"AE@address"`` of the association that sent it (kept with the series).

        Returns:
            the instance's file.

        Raises:
            ValueError: a UID is not valid (nothing is written).
            SpoolFullError: no room (nothing is written).
        """
        study_uid = check_uid(study_uid, "StudyInstanceUID")
        series_uid = check_uid(series_uid, "SeriesInstanceUID")
        return self._store(data, sop_uid, lambda: self._receiving_folder(study_uid, series_uid, caller))

    def _store(self, data: bytes, sop_uid: str, folder: Callable[[], Path]) -> Path:
        """Write ``data`` as ``<folder()>/<sop_uid>.dcm``: the UID checked, room checked, written to a temporary
        file, synced and renamed into the folder that ``folder()`` gives under the spool's lock."""
        sop_uid = check_uid(sop_uid, "SOPInstanceUID")
        if not self.has_room(len(data)):
            with self._lock:
                raise self._full_error(len(data))
        tmp = self._write_tmp(data)
        try:
            with self._lock:
                target = folder() / f"{sop_uid}.dcm"
                self._place(tmp, target)
                return target
        finally:
            tmp.unlink(missing_ok=True)

    def _receiving_folder(self, study_uid: str, series_uid: str, caller: str) -> Path:
        """The incoming folder of the series: the existing one; a queued series not yet being segmented, moved back
        to receiving; or a new one (also when the series is being segmented now: the new instances then join it,
        and its earlier ones, when this one completes)."""
        folder = self.root / "incoming" / study_uid / series_uid
        if not folder.is_dir():
            queued = self.root / "queue" / study_uid / series_uid
            if queued.is_dir() and (study_uid, series_uid) not in self._active:
                self._move(SeriesEntry(study_uid, series_uid, queued), "incoming")
                logger.info("series %s: more instances arrived; receiving again", series_uid)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                self._write_meta(folder, {"callers": [caller], "first": time.time(), "interrupted": False})
                return folder
        meta = self._read_meta(folder)
        if caller not in meta.get("callers", []):
            meta["callers"] = list(meta.get("callers", [])) + [caller]
            self._write_meta(folder, meta)
        return folder

    def mark_interrupted(self, study_uid: str, series_uid: str) -> None:
        """Note on a receiving series that an association that sent some of it ended with an abort."""
        with self._lock:
            folder = self.root / "incoming" / study_uid / series_uid
            if folder.is_dir():
                meta = self._read_meta(folder)
                if not meta.get("interrupted"):
                    meta["interrupted"] = True
                    self._write_meta(folder, meta)

    # ------------------------------------------------------------------ series states
    @staticmethod
    def _meta_path(folder: Path) -> Path:
        return folder.parent / f"{folder.name}.json"

    def _read_meta(self, folder: Path) -> dict:
        try:
            meta = json.loads(self._meta_path(folder).read_text(encoding="utf-8"))
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {}  # a series spooled before a crash that took its meta file: who sent it is unknown

    def _write_meta(self, folder: Path, meta: dict) -> None:
        path, text = self._meta_path(folder), json.dumps(meta)
        old = path.stat().st_size if path.is_file() else 0
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        self._used += path.stat().st_size - old

    def _entries(self, state: str) -> list[SeriesEntry]:
        entries = []
        base = self.root / state
        for study in sorted(base.iterdir()) if base.is_dir() else ():
            if not study.is_dir():
                continue
            for series in sorted(study.iterdir()):
                if series.is_dir():
                    entries.append(SeriesEntry(study.name, series.name, series, self._read_meta(series)))
        return entries

    def _move(self, entry: SeriesEntry, state: str) -> SeriesEntry:
        """Rename the series folder (and its meta file) into ``state``; an older folder of the same series there is
        replaced."""
        target = self.root / state / entry.study_uid / entry.series_uid
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._remove(SeriesEntry(entry.study_uid, entry.series_uid, target))
        meta = self._meta_path(entry.folder)
        os.replace(entry.folder, target)
        if meta.is_file():
            os.replace(meta, self._meta_path(target))
        self._drop_empty(entry.folder.parent)
        return SeriesEntry(entry.study_uid, entry.series_uid, target, self._read_meta(target))

    def _remove(self, entry: SeriesEntry) -> None:
        size = _tree_bytes(entry.folder) + _tree_bytes(self._meta_path(entry.folder))
        shutil.rmtree(entry.folder, ignore_errors=True)
        self._meta_path(entry.folder).unlink(missing_ok=True)
        self._used = max(0, self._used - size)
        self._drop_empty(entry.folder.parent)

    @staticmethod
    def _drop_empty(study_folder: Path) -> None:
        try:
            study_folder.rmdir()
        except OSError:
            pass  # other series of the study are there

    def receiving(self) -> list[SeriesEntry]:
        """The series still receiving."""
        with self._lock:
            return self._entries("incoming")

    def queued(self) -> list[SeriesEntry]:
        """The complete series not yet segmented (the one being segmented included)."""
        with self._lock:
            return self._entries("queue")

    def complete_idle(
        self, idle_seconds: float, timeout_seconds: float, now: float | None = None
    ) -> tuple[list[SeriesEntry], list[SeriesEntry]]:
        """Move every receiving series that got no instance for ``idle_seconds`` to the queue, and set aside in
        ``failed/`` every one still receiving ``timeout_seconds`` after its first instance.

        An earlier, segmented (or failed) copy of a completed series gives it the instances it lacks: a series is
        always segmented whole.

        Returns:
            ``(completed, timed_out)``.
        """
        now = time.time() if now is None else now
        completed, timed_out = [], []
        with self._lock:
            for entry in self._entries("incoming"):
                if entry.key in self._active:
                    continue  # instances that came while the series is segmented: they join it once that is done
                last = entry.folder.stat().st_mtime
                if now - last >= idle_seconds:
                    self._take_earlier_instances(entry)
                    completed.append(self._move(entry, "queue"))
                elif now - float(entry.meta.get("first", last)) >= timeout_seconds:
                    moved = self._move(entry, "failed")
                    moved.meta["finished"] = now
                    self._write_meta(moved.folder, moved.meta)
                    timed_out.append(moved)
        return completed, timed_out

    def _take_earlier_instances(self, entry: SeriesEntry) -> None:
        for state in ("done", "failed"):
            earlier = self.root / state / entry.study_uid / entry.series_uid
            if not earlier.is_dir():
                continue
            taken = 0
            for path in earlier.glob("*.dcm"):
                if not (entry.folder / path.name).exists():
                    os.replace(path, entry.folder / path.name)
                    taken += 1
            self._remove(SeriesEntry(entry.study_uid, entry.series_uid, earlier))
            logger.info(
                "series %s: instances arrived after it was %s; it is segmented again with its %d earlier instance(s)",
                entry.series_uid, "segmented" if state == "done" else "set aside", taken,
            )

    def take(self) -> SeriesEntry | None:
        """The queued series that completed first (it is then being segmented: new instances of it start a new
        receiving folder), or ``None``."""
        with self._lock:
            waiting = [e for e in self._entries("queue") if e.key not in self._active]
            if not waiting:
                return None
            entry = min(waiting, key=lambda e: e.folder.stat().st_mtime)
            self._active.add(entry.key)
            return entry

    def finish(self, entry: SeriesEntry, state: str = "done") -> None:
        """A series taken with :meth:`take` is segmented (``"done"``) or cannot be (``"failed"``)."""
        if state not in ("done", "failed"):
            raise ValueError(f"state must be 'done' or 'failed', got {state!r}.")
        with self._lock:
            self._active.discard(entry.key)
            moved = self._move(entry, state)
            moved.meta["finished"] = time.time()
            self._write_meta(moved.folder, moved.meta)

    def requeue(self, entry: SeriesEntry) -> None:
        """A series taken with :meth:`take` was not segmented (the node stops): it stays queued for the next start."""
        with self._lock:
            self._active.discard(entry.key)

    # ------------------------------------------------------------------ pull mode
    def pulled_folder(self, study_uid: str) -> Path:
        """``SPOOL/pull/<study>``, where pull mode retrieves a study."""
        return self.root / "pull" / check_uid(study_uid, "StudyInstanceUID")

    def store_pulled(self, data: bytes, study_uid: str, sop_uid: str) -> Path:
        """Spool one retrieved instance in its study's pull folder (see :meth:`store` for the checks)."""
        folder = self.pulled_folder(study_uid)

        def made() -> Path:
            folder.mkdir(parents=True, exist_ok=True)
            return folder

        return self._store(data, sop_uid, made)

    def remove_pulled(self, study_uid: str) -> None:
        """Remove a study's pull folder (it was segmented)."""
        with self._lock:
            folder = self.pulled_folder(study_uid)
            size = _tree_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            self._used = max(0, self._used - size)


class Outbox:
    """Results waiting to be sent, one folder per destination (``SPOOL/outbox/<hash>/``, where ``destination.json``
    names the peer), one file per object: nothing leaves the outbox but by a successful C-STORE."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    @property
    def root(self) -> Path:
        return self.spool.root / "outbox"

    def _folder(self, peer: Peer) -> Path:
        key = hashlib.sha256(f"{peer.ae_title}\0{peer.host}\0{peer.port}".encode()).hexdigest()[:16]
        folder = self.root / key
        if not (folder / _DESTINATION_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"ae_title": peer.ae_title, "host": peer.host, "port": peer.port})
            atomic_write(folder / _DESTINATION_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return folder

    def add(self, source: Path, sop_uid: str, peer: Peer) -> Path:
        """Copy ``source`` (a result with SOP Instance UID ``sop_uid``) into the outbox of ``peer``, past the
        spool's bound if need be (a result is never refused)."""
        name = f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm"
        with self.spool._lock:
            target = self._folder(peer) / name
            atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
            self.spool._used += target.stat().st_size
            return target

    def pending(self) -> list[tuple[Peer, list[Path]]]:
        """Every destination with objects to send, each in the order they were added."""
        out = []
        with self.spool._lock:
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
                files = sorted(folder.glob("*.dcm"), key=lambda p: (p.stat().st_mtime_ns, p.name))
                if not files:
                    continue
                try:
                    d = json.loads((folder / _DESTINATION_FILE).read_text(encoding="utf-8"))
                    peer = Peer(str(d["ae_title"]), str(d["host"]), int(d["port"]))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    logger.error("%s: the destination of %d result(s) is unreadable (%s); they stay there",
                                 folder, len(files), e)  # fmt: skip
                    continue
                out.append((peer, files))
        return out

    def sent(self, path: Path) -> None:
        """Remove an object that the destination stored."""
        with self.spool._lock:
            size = path.stat().st_size if path.is_file() else 0
            path.unlink(missing_ok=True)
            self.spool._used = max(0, self.spool._used - size)

    def count(self) -> int:
        return sum(len(files) for _, files in self.pending())
