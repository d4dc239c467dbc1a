"""The ``add_items`` stage: a new SID version holding the parent's items, unchanged, plus launched items.

    python -m eg_grpo.stages add_items --sid_dir outputs/demo/sids --new_items new_items.parquet \\
        --output_dir outputs/demo/sids_v2

The output is a SID folder like the ``sids`` stage's (``codebook/``, ``stage.json``) plus:

- ``added_items.parquet``: every item added since the SIDs were built (this version's and its
  ancestors'), with its catalogue columns: how a later version recognises a repeated id;
- ``placements.parquet``: this version's new items: SID, outcome (joined / opened / overflow) and
  the SID the frozen model gave;
- ``add_items_report.json``: counts per outcome and every touched cluster's size before and after.

``stage.json`` names the parent SID folder (path and fingerprint) as the input ``parent``, and its
``lineage`` lists every ancestor's fingerprint and the data the first version was built from, so
that :func:`eg_grpo.io.check_lineage` lets a model trained on any ancestor serve this version.
Every check runs before anything is written; the folder is written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.io import (
    STAGE_FILE,
    atomic_dir,
    check_lineage,
    content_config,
    read_stage,
    require_dir,
    stage_record,
    up_to_date,
    write_json,
    write_stage,
)

ADDED_ITEMS_FILE = "added_items.parquet"
PLACEMENTS_FILE = "placements.parquet"
REPORT_FILE = "add_items_report.json"


@dataclass
class AddItemsArguments:
    """Arguments of the ``add_items`` stage.

    Args:
        sid_dir: the parent SID folder (a ``sids`` or ``add_items`` output; it must hold a frozen model).
        new_items: a parquet table of the new items, with the columns of ``items.parquet``.
        new_item_vectors: a ``.npy`` of their text vectors, row-aligned (required when the parent was
            built from given vectors, ``encoder: none``).
        data_dir: the data the first SID version was built from (default: the one its ``stage.json``
            records), used to recognise ids given again with the same content.
        output_dir: the new SID folder (not the parent's).
        unknown_category: ``error`` (a new top-level category is an error) or ``all_codes`` (its items
            are placed against every level-1 code).
        max_cluster_size: ``-1``: the parent's build setting; ``0``: no limit.
        overwrite: replace an output folder holding something else.
    """

    sid_dir: str | None = field(default=None, metadata={"help": "Parent SID folder (required)."})
    new_items: str | None = field(
        default=None, metadata={"help": "Parquet table of the new items (required)."}
    )
    new_item_vectors: str | None = field(default=None, metadata={"help": ".npy vectors of the new items."})
    data_dir: str | None = field(default=None, metadata={"help": "Data of the first SID version."})
    output_dir: str | None = field(default=None, metadata={"help": "Output SID folder (required)."})
    unknown_category: str = field(default="error", metadata={"help": "'error' or 'all_codes'."})
    max_cluster_size: int = field(default=-1, metadata={"help": "-1: the parent's; 0: no limit."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of other content."})


def _inputs(args: AddItemsArguments) -> dict:
    parent = require_dir(args.sid_dir, "sid_dir", "the SID folder to extend (recipes/build_sids.py output)")
    if not args.new_items or not Path(args.new_items).is_file():
        raise FileNotFoundError(
            f"new_items {args.new_items!r} is not a file: pass a parquet table of the new items"
        )
    if args.new_item_vectors and not Path(args.new_item_vectors).is_file():
        raise FileNotFoundError(f"new_item_vectors {args.new_item_vectors} is not a file")
    return {"parent": parent, "new_items": args.new_items, "new_item_vectors": args.new_item_vectors}


def add_items_record(args: AddItemsArguments) -> dict:
    """``stage.json`` of the new version: the settings, the parent's and the new items' fingerprints."""
    config = content_config(args, drop=("sid_dir", "new_items", "new_item_vectors", "data_dir"))
    return stage_record("add_items", config, _inputs(args))


def lineage_of(parent_dir: str | Path) -> dict:
    """The ``lineage`` entry of a child of ``parent_dir``: ancestors' fingerprints (parent first) and root data."""
    parent = read_stage(parent_dir)
    if parent is None:
        raise ValueError(
            f"{parent_dir} has no {STAGE_FILE}: a new version must name its parent's fingerprint; build the SIDs "
            "with recipes/build_sids.py"
        )
    inherited = parent.get("lineage") or {}
    return {
        "ancestors": [parent["fingerprint"], *inherited.get("ancestors", [])],
        "ancestor_paths": [str(Path(parent_dir).resolve()), *inherited.get("ancestor_paths", [])],
        "data": inherited.get("data") or (parent.get("inputs") or {}).get("data"),
    }


def _known_items(args: AddItemsArguments, lineage: dict) -> pd.DataFrame | None:
    """The catalogue content of the parent's items: the root data's items plus every added one."""
    tables = []
    data_dir = args.data_dir or (lineage.get("data") or {}).get("path")
    if data_dir and (Path(data_dir) / "items.parquet").is_file():
        if args.data_dir:
            check_lineage(data_dir=args.data_dir, sid_dir=args.sid_dir)
        tables.append(pd.read_parquet(Path(data_dir) / "items.parquet"))
    if (Path(args.sid_dir) / ADDED_ITEMS_FILE).is_file():
        tables.append(pd.read_parquet(Path(args.sid_dir) / ADDED_ITEMS_FILE))
    return pd.concat(tables, ignore_index=True) if tables else None


def run(args: AddItemsArguments) -> dict:
    """Checks everything, places the new items, writes the new version atomically; returns the report."""
    from eg_grpo.data.schema import ITEMS_COLUMNS, validate_table
    from eg_grpo.data.sft_dataset import load_codebook
    from eg_grpo.sid.add_items import extend_codebook, split_new_and_known

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.output_dir:
        raise ValueError(
            "no output folder: pass --output_dir DIR (a new folder: the parent is never changed)"
        )
    record = add_items_record(args)
    if Path(args.output_dir).resolve() == Path(args.sid_dir).resolve():
        raise ValueError("output_dir is the parent SID folder: write the new version to another folder")
    if up_to_date(args.output_dir, record, args.overwrite):
        return json.loads((Path(args.output_dir) / REPORT_FILE).read_text())
    start = time.perf_counter()
    lineage = lineage_of(args.sid_dir)
    table = validate_table("items", pd.read_parquet(args.new_items))  # missing columns, duplicate ids
    vectors = np.load(args.new_item_vectors) if args.new_item_vectors else None
    if vectors is not None and len(vectors) != len(table):
        raise ValueError(f"{len(vectors)} vectors in {args.new_item_vectors} for {len(table)} new items")
    book = load_codebook(args.sid_dir)
    if book.quantizer is None:
        raise ValueError(
            f"{args.sid_dir} holds '{book.method}' SIDs without a frozen model: new items cannot be placed; "
            "build SIDs with method cq_sid, rqvae or rqkmeans"
        )
    fresh, repeated = split_new_and_known(table, book, _known_items(args, lineage))
    if len(fresh) == 0:
        raise ValueError(
            f"every item of {args.new_items} already has a SID in {args.sid_dir}: nothing to add"
        )
    if vectors is not None:
        vectors = vectors[~table["item_id"].isin(repeated).to_numpy()]
    limit = None if args.max_cluster_size < 0 else args.max_cluster_size
    try:
        child, placement = extend_codebook(book, fresh, vectors, args.unknown_category, limit)
    except (KeyError, RuntimeError) as err:  # unknown categories, no model: bad input, named as such
        raise ValueError(str(err).strip("'\"")) from err
    report = {"parent": str(Path(args.sid_dir).resolve()), "parent_fingerprint": lineage["ancestors"][0],
              "parent_items": len(book.item_ids), "repeated_items_skipped": len(repeated),
              **placement.summary(), "items": len(child.item_ids)}  # fmt: skip
    added = pd.concat(
        [t for t in (_parent_added(args.sid_dir), fresh[[*ITEMS_COLUMNS, *_extra(fresh)]]) if t is not None],
        ignore_index=True,
    )
    with atomic_dir(args.output_dir, overwrite=True) as tmp:
        child.save(tmp / "codebook")
        added.to_parquet(tmp / ADDED_ITEMS_FILE, index=False)
        placement.table().to_parquet(tmp / PLACEMENTS_FILE, index=False)
        write_json(tmp / REPORT_FILE, report)
        write_stage(tmp, record, time.perf_counter() - start, lineage=lineage)
    print(summary_text(report))
    return report


def _parent_added(sid_dir) -> pd.DataFrame | None:
    path = Path(sid_dir) / ADDED_ITEMS_FILE
    return pd.read_parquet(path) if path.is_file() else None


def _extra(items: pd.DataFrame) -> list[str]:
    # optional catalogue columns worth keeping with the item (text for a later encoder, launch time)
    return [c for c in ("description", "launch_time") if c in items.columns]


def summary_text(report: dict, largest: int = 5) -> str:
    """A few lines saying where the new items went (the printed form of ``add_items_report.json``)."""
    lines = [
        f"{report['new_items']} new item(s) placed ({report['repeated_items_skipped']} repeated id(s) skipped): "
        f"{report['joined']} joined an existing SID, {report['opened']} opened a new one, {report['overflow']} "
        f"went to a free code beside a full cluster; {report['touched_sids']} SID(s) touched, "
        f"{report['new_sids']} new; {report['parent_items']} -> {report['items']} items",
    ]
    for c in report["clusters"][:largest]:
        lines.append(f"  SID {'-'.join(map(str, c['sid']))}: {c['before']} -> {c['after']} items")
    return "\n".join(lines)


def stage_arguments():
    return (AddItemsArguments,)
