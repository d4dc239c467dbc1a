"""What a simulated data folder *holds*, independent of how parquet wrote it.

A parquet file's bytes carry the writer's version and layout choices, so a hash of the files changes
with every pyarrow release. :func:`content_summary` reads the tables back and summarises their content:

- row count and column names, per table;
- every exact column (integers, booleans, strings, lists of them): a sha256 of its values as
  canonical JSON, so one changed id, click or title changes it;
- every float column: its sum, its sum of squares and 32 values at evenly spaced rows, compared
  with a relative tolerance (:data:`FLOAT_RTOL`), because float64 results of ``exp`` / ``log`` may
  differ in their last bits between numpy builds and CPUs.

Run ``python tests/arena/sim_content.py`` to print the summaries of the reference configurations
(only when a change is *meant* to move the simulator's output: say so in the commit).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("items", "requests", "impressions")
# float64 noise between builds is a few ulps (~1e-16 relative); a changed formula moves a value by
# far more than 1e-9.
FLOAT_RTOL = 1e-9
SAMPLE_ROWS = 32
REFERENCE_FILE = Path(__file__).with_name("sim_reference.json")


def _jsonable(value):
    if isinstance(value, np.ndarray | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer | bool | np.bool_):
        return int(value)
    return value


def _exact_digest(column: pd.Series) -> str:
    values = [_jsonable(v) for v in column.tolist()]
    return hashlib.sha256(json.dumps(values, ensure_ascii=False).encode()).hexdigest()[:24]


def _float_summary(column: pd.Series) -> dict:
    x = column.to_numpy(dtype=np.float64)
    rows = np.linspace(0, len(x) - 1, min(SAMPLE_ROWS, len(x))).astype(int)
    return {"sum": float(x.sum()), "sum_sq": float((x * x).sum()), "sample": x[rows].tolist()}


def content_summary(folder: str | Path) -> dict:
    """``{table: {"rows", "columns", "exact": {col: digest}, "float": {col: summary}}}`` of a data folder."""
    out = {}
    for table in TABLES:
        df = pd.read_parquet(Path(folder) / f"{table}.parquet")
        floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
        out[table] = {
            "rows": len(df),
            "columns": list(df.columns),
            "exact": {c: _exact_digest(df[c]) for c in df.columns if c not in floats},
            "float": {c: _float_summary(df[c]) for c in floats},
        }
    return out


def differences(got: dict, want: dict, rtol: float = FLOAT_RTOL) -> list[str]:
    """Human-readable differences between two summaries (empty when they agree)."""
    problems = []
    for table in TABLES:
        g, w = got[table], want[table]
        for key in ("rows", "columns"):
            if g[key] != w[key]:
                problems.append(f"{table}.{key}: {w[key]} -> {g[key]}")
        for col, digest in w["exact"].items():
            if g["exact"].get(col) != digest:
                problems.append(f"{table}.{col}: values changed")
        for col, summary in w["float"].items():
            have = g["float"].get(col)
            if have is None:
                problems.append(f"{table}.{col}: float column missing")
                continue
            for stat in ("sum", "sum_sq", "sample"):
                if not np.allclose(have[stat], summary[stat], rtol=rtol, atol=0.0):
                    problems.append(f"{table}.{col}: {stat} differs beyond rtol {rtol}")
    return problems


if __name__ == "__main__":  # print the reference summaries (see the module docstring)
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_oracle import CONFIGS

    from eg_grpo.data.simulator import write_simulated_data

    reference = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in CONFIGS.items():
            write_simulated_data(config, Path(tmp) / name)
            reference[name] = content_summary(Path(tmp) / name)
    print(json.dumps(reference, indent=1))
