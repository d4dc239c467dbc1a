"""Checks a data folder a user brought: the three tables, their columns, and what the stages need.

`SearchLog.load` stops at the first schema error, which is right for a stage but slow for a person
fixing a dataset. :func:`validate_data_dir` reports every problem it can find in one pass, split
into *errors* (a stage would refuse the folder) and *warnings* (the stages run, but something will
be weaker than it looks: an empty split, requests no impression points to, history items outside
the catalogue). `recipes/validate_data.py DIR` prints the report and exits non-zero on errors.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eg_grpo.data.schema import SPLITS, TABLES, SchemaError, SearchLog, validate_table


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
        lines = [f"data folder {self.data_dir}: " + ("OK" if self.ok else f"{len(self.errors)} error(s)")]
        lines += [f"  {name}: {n:,}" for name, n in self.counts.items()]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _read_tables(data_dir: Path, report: DataReport) -> dict[str, pd.DataFrame]:
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
        try:
            validate_table(name, df)
        except SchemaError as exc:
            report.errors.append(str(exc))
            continue
        report.counts[name] = len(df)
        tables[name] = df
    return tables


def _cross_checks(tables: dict[str, pd.DataFrame], report: DataReport) -> None:
    if len(tables) < len(TABLES):
        return
    try:
        SearchLog(**tables)
    except SchemaError as exc:
        report.errors.append(str(exc))
        return
    requests, impressions, items = tables["requests"], tables["impressions"], tables["items"]
    for split in SPLITS:
        report.counts[f"requests in split {split}"] = int((requests["split"] == split).sum())
    for split in ("train", "test"):
        if report.counts[f"requests in split {split}"] == 0:
            report.errors.append(
                f"split '{split}' has no requests: SFT trains on 'train', evaluation reads 'test'"
            )
    if report.counts["requests in split valid"] == 0:
        report.warnings.append("split 'valid' is empty: held-out metrics during RL and tuning need it")
    without = set(requests["request_id"]) - set(impressions["request_id"])
    if without:
        report.warnings.append(
            f"{len(without):,} request(s) have no impression: they give no training target"
        )
    clicked = impressions[impressions["clicked"].astype(bool)]
    no_click = set(requests["request_id"]) - set(clicked["request_id"])
    if len(no_click) == len(requests):
        report.errors.append("no impression is clicked: SFT and the rewards learn from clicks")
    known = set(items["item_id"].tolist())
    unknown_history = sum(1 for h in requests["history"] for i in h if i not in known)
    if unknown_history:
        report.warnings.append(
            f"{unknown_history:,} history entr(ies) name items not in items.parquet; prompts skip them"
        )
    if (items["title"].str.strip() == "").any():
        report.warnings.append(
            f"{int((items['title'].str.strip() == '').sum()):,} item(s) have an empty title"
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
