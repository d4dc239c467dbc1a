"""Artifact I/O shared by every stage: atomic writes and config fingerprints.

Every stage writes one artifact folder. A folder is written under a temporary name and renamed
into place only when complete, so a killed process never leaves a half-written artifact that a
later run would take as done. ``stage.json`` inside it records the fingerprint of the config
that produced it; a stage whose fingerprint differs is stale and is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STAGE_FILE = "stage.json"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def fingerprint(obj: Any) -> str:
    """A short stable hash of a config (dataclass, dict, list, scalars)."""
    text = json.dumps(_jsonable(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json(path: str | Path, obj: Any) -> None:
    """Writes JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary sibling folder; on success it replaces ``path``, on error it is removed.

    Example:
        >>> with atomic_dir(out / "sids") as tmp:
        ...     codebook.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


def mark_stage_done(folder: str | Path, config: Any, **extra: Any) -> None:
    """Records in ``folder/stage.json`` which config produced the artifact."""
    write_json(Path(folder) / STAGE_FILE, {"fingerprint": fingerprint(config), **extra})


def stage_is_current(folder: str | Path, config: Any) -> bool:
    """True when ``folder`` holds a finished artifact produced by exactly this config."""
    marker = Path(folder) / STAGE_FILE
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint(config)
    except json.JSONDecodeError:
        return False
