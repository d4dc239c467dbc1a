"""Checks a data folder a user brought: the three tables, their columns, and what the stages need.

`SearchLog.load` stops at the first schema error, which is right for a stage but slow for a person
fixing a dataset. :func:`validate_data_dir` reports every problem it can find in one pass (every
column of every table, and the checks across tables on whatever could be read), split into *errors*
(a stage would refuse the folder, e.g. a negative price: the GMV rewards use it, or an item shown or in a
history before its ``launch_time``) and *warnings* (the
stages run, but something will be weaker than it looks: an empty split, requests no impression
points to, history items outside the catalogue, test requests older than all training ones, no
ground-truth ``gt_`` columns for the arena and the oracle curves). `recipes/validate_data.py DIR` prints the report and exits non-zero on errors.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eg_grpo.data.ground_truth import GT_ITEM_COLUMNS, GT_REQUEST_COLUMNS
from eg_grpo.data.schema import SPLITS, TABLES, table_problems


@dataclass
class DataReport:
    """What :func:`validate_data_dir` found.

    Args:
        data_dir: the folder checked.
        errors: problems a stage would refuse the folder for, one line each.
        warnings: problems the stages tolerate, one line each.
        counts: rows per table and requests per split (for the tables that could be read).
    """

    data_dir: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.errors)} error(s)"
        lines = [f"data folder {self.data_dir}: {verdict}, {len(self.warnings)} warning(s)"]
        lines += [f"  {name}: {n:,}" for name, n in self.counts.items()]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _read_tables(data_dir: Path, report: DataReport) -> dict[str, pd.DataFrame]:
    """Every table that could be read, schema errors or not: the later checks use whatever columns it has."""
    tables = {}
    for name in TABLES:
        path = data_dir / f"{name}.parquet"
        if not path.exists():
            report.errors.append(f"{path.name} is missing (columns needed: {', '.join(TABLES[name])})")
            continue
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # a damaged or non-parquet file: say so, keep checking the others
            report.errors.append(f"{path.name} cannot be read as parquet: {exc}")
            continue
        for column, kind in TABLES[name].items():
            if kind.startswith("list[") and column in df.columns:
                df[column] = [
                    list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for v in df[column]
                ]
        report.errors += [str(problem) for problem in table_problems(name, df)]
        report.counts[name] = len(df)
        tables[name] = df
    return tables


def _has(tables: dict[str, pd.DataFrame], name: str, *columns: str) -> bool:
    return name in tables and set(columns) <= set(tables[name].columns)


def _unknown_ids(tables, report: DataReport) -> None:
    for column, table in (("item_id", "items"), ("request_id", "requests")):
        if _has(tables, "impressions", column) and _has(tables, table, column):
            unknown = set(tables["impressions"][column].tolist()) - set(tables[table][column].tolist())
            if unknown:
                report.errors.append(f"table 'impressions', column '{column}': {len(unknown):,} id(s) not in "
                                     f"{table}.parquet, e.g. {min(unknown)}")  # fmt: skip


def _split_checks(tables, report: DataReport) -> None:
    if not _has(tables, "requests", "split"):
        return
    requests = tables["requests"]
    for split in SPLITS:
        report.counts[f"requests in split {split}"] = int((requests["split"] == split).sum())
    for split in ("train", "test"):
        if report.counts[f"requests in split {split}"] == 0:
            report.errors.append(
                f"split '{split}' has no requests: SFT trains on 'train', evaluation reads 'test'"
            )
    if report.counts["requests in split valid"] == 0:
        report.warnings.append("split 'valid' is empty: held-out metrics during RL and tuning need it")
    if "timestamp" in requests.columns and pd.api.types.is_numeric_dtype(requests["timestamp"]):
        train = requests.loc[requests["split"] == "train", "timestamp"]
        test = requests.loc[requests["split"] == "test", "timestamp"]
        early = int((test < train.min()).sum()) if len(train) else 0
        if early:
            # A warning, not an error: the stages run, but the figures measure something else than deployment.
            report.warnings.append(
                f"{early:,} test request(s) are dated before every training request (earliest train timestamp "
                f"{int(train.min())}): the model is tested on the past after training on the future, which "
                "flatters it; split by time (train first, test last) to measure what deployment sees"
            )


def _launch_checks(tables, report: DataReport) -> None:
    """Impressions and history entries dated before their item's ``launch_time`` (errors, with counts).

    An impression is dated by its request's ``timestamp``. A history entry happened before its request, so
    one in a request older than the item's launch is impossible too.
    """
    if not (
        _has(tables, "items", "item_id", "launch_time")
        and _has(tables, "requests", "request_id", "timestamp")
    ):
        return
    items, requests = tables["items"], tables["requests"]
    launch = pd.to_numeric(items["launch_time"], errors="coerce").astype(float)  # bad values: schema errors
    launch = pd.Series(launch.to_numpy(), index=items["item_id"].to_numpy()).dropna()
    if launch.empty or not pd.api.types.is_numeric_dtype(requests["timestamp"]):
        return
    launch = launch[~launch.index.duplicated()]
    when = requests.drop_duplicates("request_id").set_index("request_id")["timestamp"]
    found = []
    if _has(tables, "impressions", "request_id", "item_id"):
        imps = tables["impressions"]
        found.append(("impression(s)", imps["item_id"], imps["request_id"], imps["request_id"].map(when)))
    if "history" in requests.columns:
        entries = (
            requests[["request_id", "timestamp", "history"]].explode("history").dropna(subset=["history"])
        )
        found.append(("history entr(ies)", entries["history"], entries["request_id"], entries["timestamp"]))
    for what, item, request, timestamp in found:
        launched = item.map(launch).to_numpy(dtype=float)
        early = timestamp.to_numpy(dtype=float) < launched  # NaN (no launch_time) compares False
        if early.any():
            i = int(early.argmax())
            report.errors.append(
                f"{int(early.sum()):,} {what} of {item[early].nunique():,} item(s) predate the item's launch_time, "
                f"e.g. item {item.iloc[i]} in request {request.iloc[i]} at timestamp {int(timestamp.iloc[i])}, "
                f"launched at {int(launched[i])}"
            )


def _cross_checks(tables: dict[str, pd.DataFrame], report: DataReport) -> None:
    """Checks across tables, run on whatever could be read (a table with schema errors included)."""
    _unknown_ids(tables, report)
    _split_checks(tables, report)
    _launch_checks(tables, report)
    if _has(tables, "requests", "request_id") and _has(tables, "impressions", "request_id"):
        requests, impressions = tables["requests"], tables["impressions"]
        without = set(requests["request_id"].tolist()) - set(impressions["request_id"].tolist())
        if without:
            report.warnings.append(
                f"{len(without):,} request(s) have no impression: they give no training target"
            )
        if "clicked" in impressions.columns and not impressions["clicked"].astype(bool).any():
            report.errors.append("no impression is clicked: SFT and the rewards learn from clicks")
    if _has(tables, "requests", "history") and _has(tables, "items", "item_id"):
        known = set(tables["items"]["item_id"].tolist())
        unknown_history = sum(1 for h in tables["requests"]["history"] if hasattr(h, "__iter__")
                              for i in h if i not in known)  # fmt: skip
        if unknown_history:
            report.warnings.append(
                f"{unknown_history:,} history entr(ies) name items not in items.parquet; prompts skip them"
            )
    if _has(tables, "items", "title") and pd.api.types.is_string_dtype(tables["items"]["title"]):
        empty = int((tables["items"]["title"].astype(str).str.strip() == "").sum())
        if empty:
            report.warnings.append(f"{empty:,} item(s) have an empty title")
    if "items" in tables and "requests" in tables:
        missing = [f"requests.{c}" for c in GT_REQUEST_COLUMNS if c not in tables["requests"].columns]
        missing += [f"items.{c}" for c in GT_ITEM_COLUMNS if c not in tables["items"].columns]
        if missing:
            report.warnings.append(
                f"no ground-truth columns ({len(missing)} missing, e.g. {missing[0]}): training and evaluation "
                "run, but the arena's oracle and the RL oracle curves need them (simulated data has them)"
            )


def validate_data_dir(data_dir: str | Path) -> DataReport:
    """Checks ``data_dir`` (items / requests / impressions parquet) and returns every problem found.

    Raises:
        FileNotFoundError: when ``data_dir`` is not a folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir} is not a folder; pass the folder that holds items/requests/impressions.parquet"
        )
    report = DataReport(str(data_dir))
    tables = _read_tables(data_dir, report)
    _cross_checks(tables, report)
    return report


def main(argv: list[str] | None = None) -> int:
    """``recipes/validate_data.py DIR``: prints the report; 0 when a stage would accept the folder, else 1."""
    parser = argparse.ArgumentParser(
        description="Check a data folder: every schema error and warning at once."
    )
    parser.add_argument(
        "data_dir", help="folder holding items.parquet, requests.parquet, impressions.parquet"
    )
    report = validate_data_dir(parser.parse_args(argv).data_dir)
    print(report.render())
    return 0 if report.ok else 1
