"""The three tables every stage reads: items, requests, impressions (parquet under one folder).

A real dataset is a loader that produces these three tables; nothing downstream knows where they
came from. Extra columns are allowed (the simulator adds ground-truth columns prefixed ``gt_``);
missing or malformed required columns are a :class:`SchemaError` naming table, column and problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# "rl": rows kept for the RL stage alone (SFT trains on "train"), so RL learns from logs the
# supervised model has not fit; a loader that does not make them simply leaves the split empty.
SPLITS = ("train", "rl", "valid", "test")

# table -> {column: kind}; kinds are checked by `_check_kind`.
ITEMS_COLUMNS = {
    "item_id": "int",
    "title": "str",
    "category_path": "list[str]",
    "brand": "str",
    "price": "float",
}
# Optional item columns: checked only when present.
# ``launch_time``: when the item went on sale, in the requests' timestamp unit; null (or the column
# absent) = on sale before the log starts. No impression or history entry of an item may predate it
# (``recipes/validate_data.py`` checks); the simulator writes it with ``launch_share > 0``.
OPTIONAL_ITEMS_COLUMNS = {"launch_time": "int_or_null"}
REQUESTS_COLUMNS = {
    "request_id": "int",
    "user_id": "int",
    "query": "str",
    "timestamp": "int",
    "history": "list[int]",
    "split": "split",
}
# Optional request columns: checked only when present.
# ``profile``: the user's coarse profile, a few categorical features as "key=value;key=value"
# (e.g. "power=premium"); "" when the request has none. Rendered into the prompt when present.
OPTIONAL_REQUESTS_COLUMNS = {"profile": "profile"}
PROFILE_TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")
IMPRESSIONS_COLUMNS = {
    "request_id": "int",
    "item_id": "int",
    "position": "int",
    "clicked": "bool",
    "purchased": "bool",
}
TABLES = {"items": ITEMS_COLUMNS, "requests": REQUESTS_COLUMNS, "impressions": IMPRESSIONS_COLUMNS}


def parse_profile(text: str) -> dict[str, str]:
    """``"power=premium;age=25-34"`` → ``{"power": "premium", "age": "25-34"}`` (``""`` → ``{}``).

    Raises:
        ValueError: an entry that is not ``key=value``, a repeated key, or a key or value with
            characters other than letters, digits and ``_ . + -`` (they would blur the prompt).
    """
    out: dict[str, str] = {}
    for entry in (text or "").split(";"):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not PROFILE_TOKEN.match(key) or not PROFILE_TOKEN.match(value):
            raise ValueError(
                f"profile entry {entry!r} in {text!r} is not key=value with letters, digits or _.+- "
                "(write e.g. 'power=premium;age=25-34')"
            )
        if key in out:
            raise ValueError(f"profile {text!r} repeats the key {key!r}")
        out[key] = value
    return out


def format_profile(profile: Mapping[str, object] | str | None) -> str:
    """The ``profile`` column value of a mapping (keys in the given order); a string is checked as is."""
    if profile is None:
        return ""
    if isinstance(profile, str):
        parse_profile(profile)
        return profile
    text = ";".join(f"{k}={v}" for k, v in profile.items())
    parse_profile(text)
    return text


class SchemaError(ValueError):
    """A table does not follow the schema. The message names the table, the column and the problem."""

    def __init__(self, table: str, column: str | None, problem: str):
        self.table, self.column, self.problem = table, column, problem
        where = f"table '{table}'" + (f", column '{column}'" if column else "")
        super().__init__(f"{where}: {problem}")


def _check_kind(table: str, column: str, values: pd.Series, kind: str) -> None:
    if kind == "int_or_null":  # nullable: pandas reads an int column with nulls as Int64 or float
        present = values.dropna()
        integral = pd.api.types.is_float_dtype(values) and bool((present == present.round()).all())
        if len(present) and not (pd.api.types.is_integer_dtype(values) or integral):
            raise SchemaError(table, column, f"expected integers or nulls, got dtype {values.dtype}")
        return
    if values.isna().any():
        bad = int(values.isna().sum())
        raise SchemaError(table, column, f"{bad} missing value(s); every row needs one")
    if kind == "int":
        if not (pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise SchemaError(table, column, f"expected integers, got dtype {values.dtype}")
    elif kind == "float":
        if not pd.api.types.is_numeric_dtype(values):
            raise SchemaError(table, column, f"expected numbers, got dtype {values.dtype}")
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            raise SchemaError(table, column, "non-finite value(s) (inf/nan)")
    elif kind == "bool":
        if not (pd.api.types.is_bool_dtype(values) or set(pd.unique(values)) <= {0, 1}):
            raise SchemaError(table, column, f"expected booleans (or 0/1), got dtype {values.dtype}")
    elif kind == "str":
        not_str = [v for v in values.head(1000) if not isinstance(v, str)]
        if not_str:
            raise SchemaError(table, column, f"expected strings, found {type(not_str[0]).__name__}")
    elif kind == "split":
        unknown = set(pd.unique(values)) - set(SPLITS)
        if unknown:
            unknown = sorted(map(str, unknown))  # plain strings in the message, not np.str_ reprs
            raise SchemaError(table, column, f"unknown split value(s) {unknown}; use {SPLITS}")
    elif kind == "profile":
        _check_kind(table, column, values, "str")
        for i, v in enumerate(values):
            try:
                parse_profile(v)
            except ValueError as err:
                raise SchemaError(table, column, f"row {i}: {err}") from None
    elif kind.startswith("list["):
        elem = str if kind == "list[str]" else (int, np.integer)
        for i, v in enumerate(values):
            if not isinstance(v, list | tuple | np.ndarray):
                raise SchemaError(table, column, f"row {i}: expected a list, got {type(v).__name__}")
            if len(v) and not all(isinstance(x, elem) for x in v):
                raise SchemaError(table, column, f"row {i}: list elements must be {kind[5:-1]}")


def table_problems(name: str, df: pd.DataFrame) -> list[SchemaError]:
    """Every schema problem of one table (one per column check, key and rule), in column order.

    :func:`validate_table` raises the first; ``recipes/validate_data.py`` lists them all.
    """
    if name not in TABLES:
        raise ValueError(f"unknown table '{name}'; the schema has {sorted(TABLES)}")
    if len(df) == 0:
        return [SchemaError(name, None, "the table is empty")]
    problems = []
    optional = {"items": OPTIONAL_ITEMS_COLUMNS, "requests": OPTIONAL_REQUESTS_COLUMNS}.get(name, {})
    columns = {**TABLES[name], **optional}
    for column, kind in columns.items():
        if column not in df.columns:
            if column in TABLES[name]:
                problems.append(
                    SchemaError(name, column, f"required column is missing (columns: {list(df.columns)})")
                )
            continue
        try:
            _check_kind(name, column, df[column], kind)
        except SchemaError as err:
            problems.append(err)
    key = {"items": ["item_id"], "requests": ["request_id"], "impressions": ["request_id", "item_id"]}[name]
    if set(key) <= set(df.columns):
        duplicated = df.duplicated(key)
        if duplicated.any():
            # .tolist() gives Python numbers: the message shows 7, not np.int64(7)
            first = tuple(df.loc[duplicated, key].iloc[0].tolist())
            problems.append(
                SchemaError(name, ",".join(key), f"{int(duplicated.sum())} duplicate key(s), e.g. {first}")
            )
    if name == "items" and "price" in df.columns and pd.api.types.is_numeric_dtype(df["price"]):
        negative = df["price"] < 0
        if negative.any():
            problems.append(SchemaError(name, "price", f"{int(negative.sum())} negative price(s), e.g. "
                                        f"{df['price'][negative].iloc[0]:g}: the GMV rewards and metrics use price"))  # fmt: skip
    if name == "impressions" and {"purchased", "clicked"} <= set(df.columns):
        bad = df["purchased"].astype(bool) & ~df["clicked"].astype(bool)
        if bad.any():
            problems.append(SchemaError(name, "purchased", f"{int(bad.sum())} purchase(s) without a click"))
    numeric_position = "position" in df.columns and pd.api.types.is_numeric_dtype(df["position"])
    if name == "impressions" and numeric_position and (df["position"] < 0).any():
        problems.append(
            SchemaError(name, "position", f"{int((df['position'] < 0).sum())} negative position(s)")
        )
    return problems


def validate_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Checks one table against the schema and returns it. Raises :class:`SchemaError` (the first problem)."""
    problems = table_problems(name, df)
    if problems:
        raise problems[0]
    return df


@dataclass
class SearchLog:
    """The three tables of one dataset, validated and cross-checked."""

    items: pd.DataFrame
    requests: pd.DataFrame
    impressions: pd.DataFrame

    def __post_init__(self):
        validate_table("items", self.items)
        validate_table("requests", self.requests)
        validate_table("impressions", self.impressions)
        known_items = set(self.items["item_id"].tolist())
        unknown = set(pd.unique(self.impressions["item_id"]).tolist()) - known_items
        if unknown:
            raise SchemaError(
                "impressions", "item_id", f"{len(unknown)} item id(s) not in items, e.g. {min(unknown)}"
            )
        unknown = set(pd.unique(self.impressions["request_id"]).tolist()) - set(
            self.requests["request_id"].tolist()
        )
        if unknown:
            raise SchemaError(
                "impressions",
                "request_id",
                f"{len(unknown)} request id(s) not in requests, e.g. {min(unknown)}",
            )

    def split(self, name: str) -> pd.DataFrame:
        """The requests of one split; an empty split is an error (it would silently train on nothing)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; use one of {SPLITS}")
        rows = self.requests[self.requests["split"] == name]
        if len(rows) == 0:
            raise SchemaError("requests", "split", f"split '{name}' has no rows")
        return rows

    def save(self, data_dir: str | Path) -> None:
        """Writes ``items.parquet``, ``requests.parquet``, ``impressions.parquet`` atomically."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            tmp = data_dir / f".{name}.parquet.tmp"
            getattr(self, name).to_parquet(tmp, index=False)
            tmp.replace(data_dir / f"{name}.parquet")

    @classmethod
    def load(cls, data_dir: str | Path) -> SearchLog:
        data_dir = Path(data_dir)
        tables = {}
        for name in TABLES:
            path = data_dir / f"{name}.parquet"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} not found: a data folder holds items/requests/impressions.parquet "
                    "(write one with `python recipes/make_data.py --config recipes/configs/tiny/data.yaml "
                    "--output_dir DIR`)"
                )
            df = pd.read_parquet(path)
            for column, kind in TABLES[name].items():  # parquet gives numpy arrays for list columns
                if kind.startswith("list[") and column in df.columns:
                    df[column] = [list(v) for v in df[column]]
            tables[name] = df
        return cls(**tables)
