"""The SID stage: semantic IDs of a catalogue (CQ-SID or a baseline), their statistics and lineage."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.io import (
    atomic_dir,
    content_config,
    require_dir,
    stage_record,
    up_to_date,
    write_json,
    write_stage,
)


@dataclass
class BuildSidsArguments:
    """Arguments of the SID stage that are not the ``SIDConfig``.

    Args:
        data_dir: folder with items/requests/impressions.parquet (the data stage's output).
        output_dir: where ``codebook/``, ``stats.json`` and ``stage.json`` go.
        overwrite: replace an output folder that holds SIDs of another config or data.
    """

    data_dir: str | None = field(default=None, metadata={"help": "Input data folder (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Output SID folder (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of another config."})


def sids_stage_record(script_args: BuildSidsArguments, sid_config) -> dict:
    """``stage.json`` of a SID folder: the SID config and the fingerprint of the data it is built from."""
    data = require_dir(script_args.data_dir, "data_dir", "the folder written by recipes/make_data.py")
    return stage_record("sids", {"sids": content_config(sid_config)}, {"data": data})


def run(script_args: BuildSidsArguments, sid_config) -> dict:
    """Builds the codebook and writes the SID folder atomically; returns ``stats.json``'s content."""
    from eg_grpo.data.schema import SearchLog
    from eg_grpo.sid.build import build_codebook

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not script_args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR")
    record = sids_stage_record(script_args, sid_config)
    if up_to_date(script_args.output_dir, record, script_args.overwrite):
        return json.loads((Path(script_args.output_dir) / "stats.json").read_text())
    start = time.perf_counter()
    log = SearchLog.load(script_args.data_dir)
    codebook, stats = build_codebook(log, sid_config, data_dir=script_args.data_dir)
    with atomic_dir(script_args.output_dir) as tmp:
        codebook.save(tmp / "codebook")
        write_json(tmp / "stats.json", stats)
        write_stage(tmp, record, time.perf_counter() - start)
    print(json.dumps(stats, indent=2))
    return stats


def stage_arguments():
    from eg_grpo.sid.build import SIDConfig

    return (BuildSidsArguments, SIDConfig)
