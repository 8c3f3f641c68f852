"""Run records: one JSON file per run, written atomically, read back tolerantly."""

from __future__ import annotations

import json
import os
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
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_records(folder: Path, warn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every metazoo run record under ``folder``; other or corrupt JSON files are skipped with a
    warning naming each."""
    records = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            warn(f"skipping {path}: not readable JSON ({exc})")
            continue
        if not isinstance(record, dict) or record.get("schema") != SCHEMA or "key" not in record:
            warn(f"skipping {path}: not a metazoo run record")
            continue
        record["_path"] = str(path)
        records.append(record)
    return records


def record_path(folder: Path, benchmark: str, algorithm: str, seed: int, key: str) -> Path:
    """Where the record of a run lives: one file per run key, so no run overwrites another."""
    return Path(folder) / benchmark / "runs" / f"{algorithm}-seed{seed}-{key}.json"
