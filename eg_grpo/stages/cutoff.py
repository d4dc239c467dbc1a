"""The ``data_cutoff`` stage: a data folder as it stood at a cut-off time, and the items launched since.

    python -m eg_grpo.stages data_cutoff --data_dir outputs/demo_live/data \\
        --output_dir outputs/demo_live/data_cutoff [--cutoff TIMESTAMP]

From a data folder with ``items.launch_time`` it writes a data folder of its own (SIDs are built and
models trained on it as on any other):

- ``items.parquet``: the items launched before the cut-off (the catalogue on sale then);
- ``requests.parquet`` / ``impressions.parquet``: the requests dated before the cut-off, with their
  impressions (they show and remember only launched items, as the simulator guarantees), splits kept;
- ``new_items.parquet``: the items launched at or after the cut-off, in launch order, every column of
  ``items.parquet``: the ``--new_items`` of the ``add_items`` stage;
- ``cutoff.json``: the cut-off and the counts.

``stage.json`` names the source folder as the input ``source`` and records ``cutoff_time``, so the
arena takes its new-item cut-off from a model trained on this folder and accepts the SIDs built
from it beside the full data (:func:`eg_grpo.arena.live.lineage_data_dir`). With the default cut-off
(the first test request) the folder has no test requests: it is training data; the models trained on
it are played on the source folder's test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.io import atomic_dir, require_dir, stage_record, up_to_date, write_json, write_stage

NEW_ITEMS_FILE = "new_items.parquet"
CUTOFF_FILE = "cutoff.json"
STAGE_NAME = "data_cutoff"


@dataclass
class CutoffArguments:
    """Arguments of the ``data_cutoff`` stage.

    Args:
        data_dir: a data folder whose ``items.parquet`` has ``launch_time`` (e.g. ``demo_live``).
        output_dir: the data folder as of the cut-off (not ``data_dir``).
        cutoff: the cut-off time, in the requests' timestamp unit; ``None``: the first test request.
        overwrite: replace an output folder holding something else.
    """

    data_dir: str | None = field(default=None, metadata={"help": "Data folder with launch_time (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Output data folder (required)."})
    cutoff: int | None = field(
        default=None, metadata={"help": "Cut-off timestamp (default: first test request)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of other content."})


def cutoff_record(args: CutoffArguments) -> dict:
    """The ``stage.json`` record: the cut-off setting and the source folder's fingerprint."""
    source = require_dir(
        args.data_dir, "data_dir", "a data folder with items.launch_time (recipes/make_data.py)"
    )
    cutoff = "first_test_request" if args.cutoff is None else int(args.cutoff)
    return stage_record(STAGE_NAME, {"cutoff": cutoff}, {"source": source})


def run(args: CutoffArguments) -> dict:
    """Writes the cut-off folder (skipped when it is up to date); returns the ``cutoff.json`` summary.

    Raises:
        ValueError: no output folder, the output is the source, the source has no ``launch_time`` or
            contradicts it (see :func:`eg_grpo.data.cutoff.catalogue_as_of`).
    """
    from eg_grpo.data.cutoff import catalogue_as_of, default_cutoff, launched_since
    from eg_grpo.data.schema import SearchLog

    if not args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR")
    record = cutoff_record(args)
    if Path(args.output_dir).resolve() == Path(args.data_dir).resolve():
        raise ValueError(
            "output_dir is data_dir: the cut-off folder is a new data folder beside the full one"
        )
    if up_to_date(args.output_dir, record, args.overwrite):
        import json

        return json.loads((Path(args.output_dir) / CUTOFF_FILE).read_text())
    start = time.perf_counter()
    log = SearchLog.load(args.data_dir)
    cutoff = default_cutoff(log) if args.cutoff is None else int(args.cutoff)
    before, new = catalogue_as_of(log, cutoff), launched_since(log, cutoff)
    summary = {
        "cutoff_time": cutoff,
        "items": len(before.items),
        "new_items": len(new),
        "requests": len(before.requests),
        "requests_per_split": before.requests["split"].value_counts().to_dict(),
        "requests_after_cutoff": len(log.requests) - len(before.requests),
    }
    with atomic_dir(args.output_dir) as tmp:
        before.save(tmp)
        new.to_parquet(tmp / NEW_ITEMS_FILE, index=False)
        write_json(tmp / CUTOFF_FILE, summary)
        write_stage(tmp, record, time.perf_counter() - start, cutoff_time=cutoff)
    print(
        f"wrote {args.output_dir}: {summary['items']} items on sale before {cutoff}, {summary['requests']} "
        f"requests; {summary['new_items']} items launched since in {NEW_ITEMS_FILE}"
    )
    return summary


def stage_arguments():
    return (CutoffArguments,)
