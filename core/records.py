"""Run records: one JSON file per run, written atomically, read back tolerantly, and claimed by
one process at a time through a lock file beside each record."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = 1


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write ``record`` to ``path`` atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide records from the other users of a results folder
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path, warn: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The run record at ``path``; None if there is none, or (with a warning naming the file and
    what is wrong with it) if it is not a readable, complete metazoo run record."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warn(f"{path}: not readable JSON ({exc})")
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or "key" not in record:
        warn(f"{path}: not a metazoo run record")
        return None
    missing = _missing(record)
    if missing:
        warn(f"{path}: an incomplete run record (no {missing})")
        return None
    return record


_REQUIRED = ("benchmark", "algorithm", "seed", "status")
_REQUIRED_OK = {"test": ("mean", "per_task"), "train": ("steps", "time_s", "tasks_per_s")}


def _missing(record: dict[str, Any]) -> str | None:
    """The first field a leaderboard needs that ``record`` lacks, as ``'test.mean'``; else None."""
    for name in _REQUIRED:
        if name not in record:
            return repr(name)
    if record["status"] == "ok":
        for section, names in _REQUIRED_OK.items():
            table = record.get(section)
            for name in names:
                if not isinstance(table, dict) or name not in table:
                    return repr(f"{section}.{name}")
    return None


def finished_record(path: Path, warn: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The record at ``path`` if it is a readable record of a successful run, else None (a
    corrupt file is warned about, as :func:`read_record` does)."""
    record = read_record(path, warn)
    return record if record is not None and record.get("status") == "ok" else None


def read_records(folder: Path, warn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every metazoo run record under ``folder``; other or corrupt JSON files are skipped with a
    warning naming each."""
    records = []
    for path in sorted(Path(folder).rglob("*.json")):
        record = read_record(path, lambda message: warn(f"skipping {message}"))
        if record is not None:
            record["_path"] = str(path)
            records.append(record)
    return records


def record_path(folder: Path, benchmark: str, algorithm: str, seed: int, key: str) -> Path:
    """Where the record of a run lives: one file per run key, so no run overwrites another."""
    return Path(folder) / benchmark / "runs" / f"{algorithm}-seed{seed}-{key}.json"


class RunLock:
    """``<record>.lock``: claims a run for one process, so that concurrent ``zoo bench`` processes
    on one results directory never run it twice.

    The claim is an exclusive ``flock`` on the file, which the kernel drops when its holder dies
    in any way (SIGKILL included): a lock left behind by a dead process is free to take. The file
    holds the holder's host and pid, for messages only.
    """

    def __init__(self, record: Path) -> None:
        self.path = record.with_suffix(".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Claim the run; False if another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the holder before us may have deleted the file after we opened it: retry
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Give up the claim and delete the file (deleted while locked, so no one else's)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """``host pid N`` of the current holder, for messages."""
        try:
            owner = json.loads(self.path.read_text())
            return f"{owner['host']} pid {owner['pid']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"
