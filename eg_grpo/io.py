"""The artifact contract every stage follows: atomic folders, one ``stage.json``, content lineage.

A stage (data, SIDs, ranker, SFT, RL, evaluation, ...) writes one folder. The folder is written
under a temporary name and renamed into place only when complete (RL, which needs its checkpoints
in place to resume, writes ``stage.json`` last instead, and builds the replacement of a finished
folder beside it), so a killed process never leaves a half-written artifact that a later run would
take as done, nor destroys a finished one before its replacement is complete.

``stage.json`` records:

- ``stage``: the stage's name; ``config``: the settings that shape its content (paths of inputs and
  of the output, thread counts and the like are left out);
- ``inputs``: for each folder it read, its path and its **fingerprint**: the input's own
  ``stage.json`` fingerprint, or a hash of its files' bytes when it has none (a folder you brought);
- ``fingerprint``: a hash of the stage name, the config and the input fingerprints. Builds are
  seeded, so equal fingerprints mean equal content, and a change anywhere upstream changes every
  fingerprint below it;
- ``seconds``, ``versions`` (python, torch, transformers, trl, eg-grpo), ``created`` and ``built_by``
  (the chain's output root when a chain built it: the chain may rebuild only its own folders).

:func:`check_stage_folder` is the one check recipes and the chain share: a missing folder is
built, a current one is skipped, and anything else (another config, another input, a folder without
``stage.json``) is never replaced unless the caller passes ``overwrite``; the error names the keys
that differ. :func:`check_lineage` makes a stage refuse a SID folder built from other data, or a
model trained with other SIDs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
OWNER_ENV = "EG_GRPO_CHAIN"
# A stage that must write in place while it runs (RL: checkpoints) keeps its record here until done.
PENDING_FILE = "stage.pending.json"
# Settings that never change an artifact's content: left out of the recorded config.
NON_CONTENT_KEYS = frozenset({
    "output_dir", "logging_dir", "overwrite", "num_threads", "disable_tqdm", "resume_from_checkpoint",
    "report_to", "run_name", "hub_token", "push_to_hub", "device", "encoder_threads", "reset_optimizer",
    "allow_unknown_lineage", "dataloader_num_workers", "logging_steps", "logging_first_step",
    # checkpoint saving: when and how often a run saves does not change the weights it ends with
    "save_strategy", "save_steps", "save_total_limit", "save_only_model", "save_on_each_node",
})  # fmt: skip
_HASH_CHUNK = 1 << 20
_FULL_HASH_LIMIT = 256 << 20  # bigger files: size + first and last 8 MiB (model weights)


class StageConflict(FileExistsError):
    """An output folder holds something other than what this run would write; nothing was replaced."""


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in (sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)  # YAML `3` and the command line's `3` (parsed as 3.0) are one config
    if hasattr(obj, "value") and type(obj).__module__ != "builtins" and isinstance(obj.value, str):
        return obj.value  # enums (transformers' IntervalStrategy, ...)
    return obj


def fingerprint(obj: Any) -> str:
    """A short stable hash of a config (dataclass, dict, list, scalars)."""
    text = json.dumps(_jsonable(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_config(obj: Any, drop: tuple[str, ...] = ()) -> Any:
    """``obj`` as JSON data without the keys that do not shape content (at any depth), nor ``drop``."""
    skip = NON_CONTENT_KEYS | set(drop)
    data = _jsonable(obj)

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in skip}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Writes JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False, default=str) + "\n")
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


# ---------------------------------------------------------------------------------------------
# Fingerprints of folders


def read_stage(folder: str | Path | None) -> dict | None:
    """The folder's ``stage.json`` (None when it has none or it is not a stage record)."""
    if folder is None:
        return None
    marker = Path(folder) / STAGE_FILE
    try:
        record = json.loads(marker.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "fingerprint" in record and "stage" in record else None


def _file_digest(path: Path, digest) -> None:
    size = path.stat().st_size
    digest.update(f"{size}:".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        else:
            digest.update(f.read(8 * _HASH_CHUNK))
            f.seek(size - 8 * _HASH_CHUNK)
            digest.update(f.read())


def folder_fingerprint(path: str | Path) -> str:
    """The content fingerprint of an input: its ``stage.json`` fingerprint, else a hash of its files.

    A folder without ``stage.json`` (your own data, a hub snapshot) is hashed file by file (names
    and bytes), so two same-size datasets with different rows never share a fingerprint. A string
    that is not a local path (a hub id such as ``Qwen/Qwen2.5-0.5B``) is its own fingerprint.
    """
    path = Path(path)
    record = read_stage(path)
    if record is not None:
        return record["fingerprint"]
    if not path.exists():
        return f"name:{path}"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(path) if file != path else Path(file.name)
        if any(part.startswith(".") for part in relative.parts):
            continue  # temporary and hidden files are not content
        digest.update(str(relative).encode() + b"\0")
        _file_digest(file, digest)
    return "files:" + digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("eg-grpo", "torch", "transformers", "trl"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def stage_record(stage: str, config: Any, inputs: Mapping[str, str | Path | None] | None = None) -> dict:
    """What ``stage.json`` will hold for a stage with ``config`` reading ``inputs`` (name → folder).

    Input folders must exist (a missing one is a :class:`FileNotFoundError` naming it); None entries
    are left out (an optional input not given).
    """
    recorded_inputs = {}
    for name, folder in (inputs or {}).items():
        if folder is None:
            continue
        recorded_inputs[name] = {
            "path": str(Path(folder).resolve()),
            "fingerprint": folder_fingerprint(folder),
        }
    config = _jsonable(config)
    content = {"stage": stage, "config": config,
               "inputs": {k: v["fingerprint"] for k, v in recorded_inputs.items()}}  # fmt: skip
    return {"stage": stage, "fingerprint": fingerprint(content), "config": config, "inputs": recorded_inputs}


def built_by() -> str | None:
    """Who builds artifacts in this process: the chain sets ``EG_GRPO_CHAIN`` (its output root) for its stages."""
    return os.environ.get(OWNER_ENV) or None


def write_stage(folder: str | Path, record: dict, seconds: float | None = None, **extra: Any) -> dict:
    """Writes ``folder/stage.json`` from a :func:`stage_record` (plus seconds, versions, ``built_by``, ``extra``)."""
    full = {**record, "seconds": None if seconds is None else round(float(seconds), 2), "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "built_by": built_by(), **extra}  # fmt: skip
    write_json(Path(folder) / STAGE_FILE, full)
    return full


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _diff(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{prefix}{k}.")]
    if old != new:
        return [f"{prefix[:-1]}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []


def record_diff(old: dict, new: dict) -> list[str]:
    """Readable differences between two stage records: ``config.key: old -> new``, ``inputs.name: ...``."""
    diffs = _diff(old.get("config", {}), new.get("config", {}), "config.")
    old_inputs = {k: v.get("fingerprint") for k, v in (old.get("inputs") or {}).items()}
    new_inputs = {k: v.get("fingerprint") for k, v in (new.get("inputs") or {}).items()}
    diffs += [d.replace("inputs.", "input ", 1) for d in _diff(old_inputs, new_inputs, "inputs.")]
    return diffs or [f"fingerprint {old.get('fingerprint')} -> {new.get('fingerprint')}"]


def check_stage_folder(folder: str | Path, record: dict, overwrite: bool = False,
                       flag: str = "--overwrite true") -> str:  # fmt: skip
    """Decides what a stage does with its output folder; never replaces anything unless ``overwrite``.

    Returns:
        ``"build"`` (missing or empty folder, or ``overwrite``) or ``"current"`` (``stage.json`` holds
        this very record's fingerprint: nothing to do).

    Raises:
        StageConflict: the folder holds another config or inputs (the message lists what differs),
            another stage's output, or files without a ``stage.json`` (built by hand); ``flag`` is what
            the message tells the user to pass to replace it.
    """
    folder = Path(folder)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "build"
    existing = read_stage(folder)
    if (
        existing is not None
        and existing["stage"] == record["stage"]
        and existing["fingerprint"] == record["fingerprint"]
    ):
        return "current"
    if overwrite:
        return "build"
    if existing is None:
        reason = f"holds files but no {STAGE_FILE}: it was built by hand or by an older version"
    elif existing["stage"] != record["stage"]:
        reason = f"holds the output of stage '{existing['stage']}', not '{record['stage']}'"
    else:
        reason = "was built with other settings or inputs:\n  " + "\n  ".join(record_diff(existing, record))
    raise StageConflict(f"{folder} {reason}\nNothing was replaced. Pass {flag} to rebuild it, or choose "
                        "another output folder.")  # fmt: skip


def replacement_folder(folder: str | Path) -> Path:
    """The sibling where a training stage builds the replacement of a finished ``folder`` (see below)."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.rebuild")


def claim_stage_folder(folder: str | Path, record: dict, overwrite: bool = False, claim: bool = True) -> str:
    """Like :func:`check_stage_folder` for a stage that checkpoints: a killed run's folder is resumable.

    A training stage writes ``stage.pending.json`` (its record) when it starts and ``stage.json`` when
    it finishes, so a folder holding this very record's pending file and checkpoints is the same run,
    interrupted, and may be taken back.

    Replacing a folder of other content (``overwrite``) never empties it first: a rebuild stopped
    half-way (Ctrl-C, a lost machine) would otherwise leave neither the old model nor the new one. The
    replacement trains in :func:`replacement_folder` (checkpoints and pending record there, so a killed
    rebuild resumes there) and :func:`swap_in_replacement` puts it in place once complete.

    Returns:
        ``"current"`` (finished with this record: nothing to do), ``"train"`` (train in ``folder``: it is
        empty or this run's own unfinished folder) or ``"rebuild"`` (train in :func:`replacement_folder`,
        then swap). With ``claim`` the training folder is then taken (the pending file written; an
        unfinished replacement of other settings is discarded); without it nothing is touched (a stage
        asks first, checks its inputs, then claims).

    Raises:
        StageConflict: the folder holds a finished or started run of other settings or inputs, or
            files without either record.
    """
    folder = Path(folder)
    done, pending = read_stage(folder), folder / PENDING_FILE
    if done is not None and done["stage"] == record["stage"] and done["fingerprint"] == record["fingerprint"]:
        return "current"
    started = json.loads(pending.read_text()) if pending.is_file() else None
    ours = started is not None and started["fingerprint"] == record["fingerprint"]
    empty = not folder.exists() or not any(folder.iterdir())
    if not empty and not overwrite and (done is not None or not ours):
        other = done or started
        what = ("a run of other settings or inputs:\n  " + "\n  ".join(record_diff(other, record)) if other
                else f"files but no {STAGE_FILE}: built by hand or by an older version")  # fmt: skip
        raise StageConflict(f"{folder} holds {what}\nNothing was replaced. Pass --overwrite true to start this run "
                            "there afresh, or choose another output folder.")  # fmt: skip
    target, status = folder, "train"
    if not empty and (done is not None or not ours):
        target, status = replacement_folder(folder), "rebuild"
        side = target / PENDING_FILE
        side_ours = side.is_file() and json.loads(side.read_text())["fingerprint"] == record["fingerprint"]
        if claim and not side_ours:
            shutil.rmtree(target, ignore_errors=True)  # an unfinished replacement of other settings
    if claim:
        target.mkdir(parents=True, exist_ok=True)
        write_json(target / PENDING_FILE, {**record, "built_by": built_by()})
    return status


def swap_in_replacement(folder: str | Path) -> None:
    """Puts the complete :func:`replacement_folder` in place of ``folder``; only then is the old one removed."""
    folder, new = Path(folder), replacement_folder(folder)
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def up_to_date(folder: str | Path, record: dict, overwrite: bool = False) -> bool:
    """True, after saying so, when ``folder`` already holds exactly ``record`` (the stage has nothing to do).

    The common opening of every stage's ``run()``; conflicts raise as in :func:`check_stage_folder`.
    """
    if check_stage_folder(folder, record, overwrite) != "current":
        return False
    print(f"{folder} is up to date; nothing to do")
    return True


def require_dir(path: str | Path | None, what: str, hint: str) -> Path:
    """``path`` as a folder that exists; a missing one is an error naming ``what`` and how to make it."""
    if path is None or str(path) == "":
        raise ValueError(f"{what} is required: {hint}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist (resolved against {Path.cwd()}): {hint}")
    return folder


# ---------------------------------------------------------------------------------------------
# Lineage


def _input_fingerprint(record: dict | None, name: str) -> tuple[str | None, str | None]:
    entry = ((record or {}).get("inputs") or {}).get(name)
    return (entry.get("fingerprint"), entry.get("path")) if entry else (None, None)


def check_lineage(data_dir: str | Path | None = None, sid_dir: str | Path | None = None,
                  model_dir: str | Path | None = None) -> None:  # fmt: skip
    """Refuses a SID folder built from other data, or a model trained with other SIDs.

    A SID folder's ``stage.json`` names the data it was built from, a model's the SID folder it was
    trained with (by fingerprint, see :func:`folder_fingerprint`). A folder without a record cannot
    be checked: a warning says so (the item-set check of the codebook still runs).

    A later SID version (the ``add_items`` stage: the same SIDs plus launched items) is accepted where
    its ancestor is: its ``lineage`` names the first version's data and every ancestor, and a model
    trained on an ancestor serves it once every item of that ancestor is found with its SID (checked
    on the ancestor's folder when it is still there; a warning says so when it is not).

    Raises:
        ValueError: the recorded fingerprint differs from the folder given; the message names both
            and the fix.
    """
    if sid_dir is not None and data_dir is not None:
        sids = read_stage(sid_dir)
        built_from, built_path = _input_fingerprint(sids, "data")
        if built_from is None and (root_data := ((sids or {}).get("lineage") or {}).get("data")):
            built_from, built_path = root_data.get("fingerprint"), root_data.get("path")  # a later version
        if built_from is None:
            logger.warning("%s records no data lineage: cannot check it was built from %s", sid_dir, data_dir)
        elif built_from != (given := folder_fingerprint(data_dir)):
            raise ValueError(
                f"the SID folder {sid_dir} was built from other data ({built_path}, fingerprint {built_from}); "
                f"{data_dir} has fingerprint {given}. Pass the data folder the SIDs were built from, or build "
                f"SIDs for this data: `python recipes/build_sids.py --config SIDS.yaml --data_dir {data_dir} "
                "--output_dir NEW_SID_DIR`"
            )
    if model_dir is not None and sid_dir is not None:
        model = read_stage(model_dir)
        trained_with, trained_path = _input_fingerprint(model, "sids")
        if trained_with is None:
            logger.warning(
                "%s records no SID lineage: cannot check it was trained with %s", model_dir, sid_dir
            )
        elif trained_with != (given := folder_fingerprint(sid_dir)) and not _descends_from(
            sid_dir, trained_with, trained_path
        ):
            raise ValueError(
                f"the model {model_dir} was trained with other SIDs ({trained_path}, fingerprint {trained_with}); "
                f"{sid_dir} has fingerprint {given}: its SID tokens mean other items. Pass the SID folder the "
                "model was trained with, or train SFT on these SIDs: `python recipes/sft.py --config SFT.yaml "
                f"--sid_dir {sid_dir} --output_dir NEW_MODEL_DIR`"
            )


def _descends_from(sid_dir: str | Path, ancestor: str, ancestor_path: str | None) -> bool:
    """Whether ``sid_dir`` is a later version of the SID folder fingerprinted ``ancestor`` that kept its SIDs.

    Raises:
        ValueError: it names ``ancestor`` in its lineage but items of the ancestor lost their SID.
    """
    lineage = (read_stage(sid_dir) or {}).get("lineage") or {}
    if ancestor not in (lineage.get("ancestors") or []):
        return False
    if ancestor_path is None or folder_fingerprint(ancestor_path) != ancestor:
        logger.warning(
            "%s descends from the SID version %s, which is no longer at %s: cannot check that its items kept "
            "their SIDs (the add_items stage guarantees it)", sid_dir, ancestor, ancestor_path,
        )  # fmt: skip
        return True
    from eg_grpo.sid.add_items import check_keeps_sids, read_assignments

    try:
        check_keeps_sids(read_assignments(ancestor_path), read_assignments(sid_dir))
    except ValueError as err:
        raise ValueError(
            f"{sid_dir} names {ancestor_path} as an ancestor but does not keep its SIDs: {err}"
        ) from err
    return True
