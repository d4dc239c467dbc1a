"""The paper's four offline tables, rebuilt from our evaluation folders, with the paper's numbers beside.

Source of the quoted numbers: Zhu et al., "Efficient Generative Retrieval for E-commerce Search with
Semantic Cluster IDs and Expert-Guided RL", arXiv 2605.14434 (Tmall logs; 201k query-only and 170k
personalised test requests). Ours come from ``eval_results.json`` files (:mod:`eg_grpo.eval.evaluator`).

- Table 1, semantic click hit rate by beam size for four SID variants (``click_hitrate@B``);
- Table 2, click hit rate when the recalled items are cut to an item budget (``budget_hitrate@B_top{N}``),
  and the beam the baseline needs to match the proposed SIDs;
- Table 3, personalised click hit rate at the smallest and largest beam (``click_hitrate@B``);
- Table 4, ranking alignment of SFT vs RL (``clk@1``, ``clk@10``, ``exp@1``, ``exp@10``, ``pvr@10``),
  averaged over the folders (seeds) given per row, with their standard deviation.

Relative gains are computed as the paper's: ``(row - baseline) / baseline`` in percent, the baseline
being the table's first row.

Table 4's rows are arms of one comparison, so they are checked before anything is written
(:mod:`eg_grpo.eval.comparability`): each folder's model must be what its label says (``EG-GRPO
(K=2)``: ``training_objective: grpo`` with ``num_expert_samples: 2``) and the rows must hold equal
steps, prompts per step, learning rate and schedule, RL rows, inputs and seeds. A difference is a
:class:`~eg_grpo.eval.comparability.ComparabilityError` naming the key and both values, unless
``allow_incomparable``: then the tables are built under a warning banner.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from eg_grpo.eval.comparability import ComparabilityError, check_rows

PAPER = "arXiv 2605.14434"
PAPER_TABLE1 = {  # click hit rate at beam 1 / 10 / 100
    "RQ-VAE": (0.0598, 0.2579, 0.5199),
    "w/o category": (0.0680, 0.2870, 0.5578),
    "w/o query-item": (0.0596, 0.2691, 0.5652),
    "CQ-SID": (0.0758, 0.3161, 0.6181),
}
PAPER_TABLE1_BEAMS = (1, 10, 100)
PAPER_TABLE2 = {"CQ-SID": (30, 0.4422), "RQ-VAE": (65, 0.4275)}  # (beam, hit rate) with the top-1K items
PAPER_TABLE3 = {"RQ-VAE": (0.1359, 0.7513), "CQ-SID": (0.1510, 0.8062)}  # beam 1 / beam 100
TABLE4_METRICS = ("clk@1", "clk@10", "exp@1", "exp@10", "pvr@10")
PAPER_TABLE4 = {
    "SFT": (0.1510, 0.5206, 0.5056, 0.8693, 0.4371),
    "GRPO (K=0)": (0.1519, 0.5196, 0.5077, 0.8702, 0.4360),
    "EG-GRPO (K=2)": (0.1524, 0.5221, 0.5091, 0.8703, 0.4377),
    "EG-GRPO (K=4)": (0.1523, 0.5219, 0.5087, 0.8711, 0.4378),
}


def relative_gain(value: float | None, baseline: float | None) -> float | None:
    """``(value - baseline) / baseline * 100`` (percent), None when either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return (value - baseline) / baseline * 100.0


def load_results(folder: str | Path) -> dict:
    """``folder/eval_results.json``; a missing file is a FileNotFoundError naming the command that writes it."""
    path = Path(folder) / "eval_results.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: evaluate the model first (python recipes/evaluate.py --config ... --output_dir {folder})"
        )
    return json.loads(path.read_text())


def eval_command(folder: str | Path, results: dict) -> str:
    """The command that (re)writes an evaluation folder, from what ``eval_results.json`` records.

    Every setting that differs from :class:`~eg_grpo.eval.evaluator.EvalSettings`' default is spelled
    out, so the command reproduces the folder without the YAML it was run with.
    """
    from dataclasses import fields

    from eg_grpo.eval.evaluator import EvalSettings

    defaults = {f.name: getattr(EvalSettings(), f.name) for f in fields(EvalSettings)}
    parts = ["python", "recipes/evaluate.py"]
    for key in ("data_dir", "sid_dir", "model_dir"):
        if results.get(key):
            parts += [f"--{key}", str(results[key])]
    parts += ["--output_dir", str(folder)]
    for key, value in results.get("settings", {}).items():
        if key in defaults and value != defaults[key]:
            parts += [f"--{key}"] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return shlex.join(parts)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _gain(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _folders(value) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]


class PaperTables:
    """Builds the four tables from row name → evaluation folder(s) mappings.

    Args:
        table1: SID variant → eval folder, rows named as the paper's (``RQ-VAE``, ``w/o category``,
            ``w/o query-item``, ``CQ-SID``); the first given row is the baseline of the gains.
        table2: the same for the budgeted hit rate (default: ``table1``'s folders).
        table3: ``RQ-VAE`` and ``CQ-SID`` personalised models (default: ``table1``'s two rows).
        table4: ``SFT``, ``GRPO (K=0)``, ``EG-GRPO (K=2)``, ``EG-GRPO (K=4)`` → one folder or a list
            (one per seed).
        beams: our beam sizes of Tables 1 and 3 (each must be in the evaluations' ``beam_sizes``).
        item_budget: the ``N`` of ``budget_hitrate@B_top{N}`` (in the evaluations' ``item_budgets``).
        allow_incomparable: build Table 4 even when its rows are not comparable arms, under a warning.

    Raises:
        ValueError: a row name the paper's table does not have.
        FileNotFoundError: a folder without ``eval_results.json``.
        ComparabilityError: (from :meth:`markdown`) Table 4's rows are not comparable arms.
    """

    def __init__(self, table1: Mapping, table2: Mapping | None = None, table3: Mapping | None = None,
                 table4: Mapping | None = None, beams: Sequence[int] = (1, 10, 50), item_budget: int = 100,
                 allow_incomparable: bool = False):  # fmt: skip
        for name, given, paper in (("table1", table1, PAPER_TABLE1), ("table2", table2 or {}, PAPER_TABLE1),
                                   ("table3", table3 or {}, PAPER_TABLE3), ("table4", table4 or {}, PAPER_TABLE4)):  # fmt: skip
            unknown = set(given) - set(paper)
            if unknown:
                raise ValueError(f"{name}: rows {sorted(unknown)} are not the paper's; use {list(paper)}")
        self.table1 = {k: _folders(v) for k, v in table1.items()}
        self.table2 = {k: _folders(v) for k, v in (table2 or table1).items()}
        self.table3 = {
            k: _folders(v) for k, v in (table3 or {k: table1[k] for k in PAPER_TABLE3 if k in table1}).items()
        }
        self.table4 = {k: _folders(v) for k, v in (table4 or {}).items()}
        self.beams, self.item_budget = [int(b) for b in beams], int(item_budget)
        self.allow_incomparable = bool(allow_incomparable)
        self._results: dict[str, dict] = {}
        self._warning: str | None = None
        self._unchecked: list[str] = []
        self._checked = False

    def check_comparable(self) -> None:
        """Refuses Table 4 rows that are not comparable arms (see the module's docstring).

        With ``allow_incomparable`` the reasons are printed to stderr and kept for the banner that
        :meth:`markdown` puts above the tables. Folders whose model records nothing are listed under
        Table 4 as not checked.
        """
        problems, self._unchecked = check_rows(self.table4)
        self._checked = not problems or self.allow_incomparable
        if not problems:
            return
        reasons = "\n".join(f"  - {p}" for p in problems)
        if not self.allow_incomparable:
            raise ComparabilityError(
                f"Table 4's rows are not comparable:\n{reasons}\nFix: give each row evaluations of models that "
                "are what its label says, trained with the same steps, prompts per step, learning rate and "
                "schedule, RL rows, inputs and seeds as the other rows (retrain the odd runs with the others' "
                "settings and re-evaluate them), or pass --allow_incomparable true to build the tables anyway, "
                "marked as not comparable."
            )
        self._warning = reasons
        print(
            f"WARNING: Table 4's rows are NOT comparable (allow_incomparable is on):\n{reasons}",
            file=sys.stderr,
        )

    def results(self, folder: str) -> dict:
        if folder not in self._results:
            self._results[folder] = load_results(folder)
        return self._results[folder]

    def metric(self, folders: list[str], key: str) -> tuple[float | None, float | None]:
        """Mean over the folders and their standard deviation (None with one folder or a missing key)."""
        values = [self.results(f).get(key) for f in folders]
        values = [float(v) for v in values if v is not None]
        if not values or len(values) < len(folders):
            return None, None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        return mean, std

    def commands(self) -> list[str]:
        seen, lines = set(), []
        for table in (self.table1, self.table2, self.table3, self.table4):
            for row, folders in table.items():
                for f in folders:
                    if f not in seen:
                        seen.add(f)
                        lines.append(f"- {row}: `{eval_command(f, self.results(f))}`")
        return lines

    def _by_beam(
        self, title: str, rows: dict, paper: dict, paper_beams: Sequence[int], beams: Sequence[int]
    ) -> str:
        paper_rows = [[name, *map(_fmt, vals)] for name, vals in paper.items()]
        base = next(iter(paper.values()))
        paper_rows += [[f"{name} vs {next(iter(paper))}", *(_gain(relative_gain(v, b)) for v, b in zip(vals, base))]
                       for name, vals in list(paper.items())[1:]]  # fmt: skip
        ours = {name: [self.metric(f, f"click_hitrate@{b}")[0] for b in beams] for name, f in rows.items()}
        our_rows = [[name, *map(_fmt, vals)] for name, vals in ours.items()]
        if ours:
            first, base_vals = next(iter(ours.items()))
            our_rows += [[f"{name} vs {first}", *(_gain(relative_gain(v, b)) for v, b in zip(vals, base_vals))]
                         for name, vals in list(ours.items())[1:]]  # fmt: skip
        return "\n\n".join([
            f"### {title}",
            f"Paper ({PAPER}):\n\n" + _table(["SIDs", *(f"beam {b}" for b in paper_beams)], paper_rows),
            "Ours:\n\n" + _table(["SIDs", *(f"beam {b}" for b in beams)], our_rows),
        ])  # fmt: skip

    def table_1(self) -> str:
        return self._by_beam("Table 1: semantic click hit rate by beam size (click_hitrate@B)", self.table1,
                             PAPER_TABLE1, PAPER_TABLE1_BEAMS, self.beams)  # fmt: skip

    def table_3(self) -> str:
        beams = [min(self.beams), max(self.beams)]
        return self._by_beam("Table 3: personalised click hit rate (click_hitrate@B)", self.table3,
                             PAPER_TABLE3, (1, 100), beams)  # fmt: skip

    def table_2(self) -> str:
        n = self.item_budget
        paper = _table(["SIDs", "beam", "hit rate, top-1K items"],
                       [[k, str(b), _fmt(v)] for k, (b, v) in PAPER_TABLE2.items()])  # fmt: skip
        curves = {name: self._budget_curve(f, n) for name, f in self.table2.items()}
        beams = sorted({b for c in curves.values() for b in c})
        rows = [[name, *(_fmt(c.get(b)) for b in beams)] for name, c in curves.items()]
        parts = [f"### Table 2: click hit rate with the recalled items cut to the top {n} (budget_hitrate@B_top{n})",
                 f"Paper ({PAPER}):\n\n" + paper,
                 "Ours, by beam size:\n\n" + _table(["SIDs", *(f"beam {b}" for b in beams)], rows)]  # fmt: skip
        if "RQ-VAE" in curves and "CQ-SID" in curves:
            parts.append("Smallest RQ-VAE beam reaching CQ-SID's hit rate (the paper: beam 65 for CQ-SID's beam 30):\n\n"
                         + _table(["CQ-SID beam", "CQ-SID", "RQ-VAE beam needed"],
                                  [[str(b), _fmt(v), matching_beam(curves["RQ-VAE"], v)]
                                   for b, v in sorted(curves["CQ-SID"].items())]))  # fmt: skip
        return "\n\n".join(parts)

    def _budget_curve(self, folders: list[str], n: int) -> dict[int, float]:
        keys = [
            k for k in self.results(folders[0]) if k.startswith("budget_hitrate@") and k.endswith(f"_top{n}")
        ]
        curve = {int(k.split("@")[1].split("_")[0]): self.metric(folders, k)[0] for k in keys}
        return {b: v for b, v in curve.items() if v is not None}

    def table_4(self) -> str:
        if not self._checked:
            self.check_comparable()
        paper_rows = [[k, *map(_fmt, v)] for k, v in PAPER_TABLE4.items()]
        base = PAPER_TABLE4["SFT"]
        paper_rows += [[f"{k} vs SFT", *(_gain(relative_gain(v, b)) for v, b in zip(vals, base))]
                       for k, vals in list(PAPER_TABLE4.items())[1:]]  # fmt: skip
        ours, rows = {}, []
        for name, folders in self.table4.items():
            stats = [self.metric(folders, m) for m in TABLE4_METRICS]
            ours[name] = [m for m, _ in stats]
            cells = [_fmt(m) + (f" ± {s:.4f}" if s is not None else "") for m, s in stats]
            rows.append([f"{name} ({len(folders)} run{'s' if len(folders) > 1 else ''})", *cells])
        if ours:
            first, base_vals = next(iter(ours.items()))
            rows += [[f"{k} vs {first}", *(_gain(relative_gain(v, b)) for v, b in zip(vals, base_vals))]
                     for k, vals in list(ours.items())[1:]]  # fmt: skip
        header = ["model", *TABLE4_METRICS]
        parts = [
            "### Table 4: ranking alignment (clk = click, exp = exposure hit rate, pvr = exposure coverage)",
            f"Paper ({PAPER}):\n\n" + _table(header, paper_rows),
            "Ours (mean ± standard deviation over the runs given):\n\n" + _table(header, rows),
        ]
        if self._warning:
            parts.insert(1, "> **WARNING: these rows are NOT comparable** (built with allow_incomparable):\n"
                         + "\n".join(f"> {line.strip()}" for line in self._warning.splitlines()))  # fmt: skip
        if self._unchecked:
            parts.append("Not checked for comparability:\n\n" + "\n".join(f"- {n}" for n in self._unchecked))
        paired = self._paired_rows()
        if paired:
            parts.append(f"Ours, each run minus {next(iter(self.table4))} on the same requests (Δ ± paired standard "
                         "error; * = |Δ| > 2 SE):\n\n" + _table(["run", *TABLE4_METRICS], paired))  # fmt: skip
        return "\n\n".join(parts)

    def _paired_rows(self) -> list[list[str]]:
        """One row per run of every row after the first: the per-request difference from the first
        row's (single) folder, over the requests both scored (``per_request.csv`` columns)."""
        base_name, base_folders = next(iter(self.table4.items()))
        base = per_request(base_folders[0]) if len(base_folders) == 1 else None
        if base is None or not set(TABLE4_METRICS) <= set(base.columns):
            return []
        rows = []
        for name, folders in list(self.table4.items())[1:]:
            for i, folder in enumerate(folders):
                other = per_request(folder)
                if other is None or not set(TABLE4_METRICS) <= set(other.columns):
                    continue
                common = base.index.intersection(other.index)
                cells = [_paired_cell(other.loc[common, m].to_numpy() - base.loc[common, m].to_numpy())
                         for m in TABLE4_METRICS]  # fmt: skip
                rows.append([f"{name} run {i + 1} ({Path(folder).name})", *cells])
        return rows

    def markdown(self) -> str:
        if self.table4:
            self.check_comparable()  # before any folder is read: a refused table writes nothing
        parts = [self.table_1(), self.table_2(), self.table_3()]
        if self.table4:
            parts.append(self.table_4())
        if self._warning:
            parts.insert(0, "> **WARNING: NOT COMPARABLE.** Table 4's rows differ in what the comparison holds "
                         "equal; see Table 4.")  # fmt: skip
        parts.append("### Commands of each row\n\n" + "\n".join(self.commands()))
        return "\n\n".join(parts) + "\n"


def per_request(folder: str | Path):
    """``folder/per_request.csv`` indexed by request id, or None (evaluations written without it)."""
    import pandas as pd

    path = Path(folder) / "per_request.csv"
    return pd.read_csv(path, index_col="request_id") if path.exists() else None


def _paired_cell(diff) -> str:
    if len(diff) < 2:
        return "—"
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    mean = float(diff.mean())
    return f"{mean:+.4f} ± {se:.4f}" + ("*" if se > 0 and abs(mean) > 2 * se else "")


def matching_beam(curve: Mapping[int, float], target: float) -> str:
    """The smallest beam of ``curve`` (beam → hit rate) reaching ``target``, or ``> max`` when none does."""
    reached = [b for b, v in sorted(curve.items()) if v >= target]
    return str(reached[0]) if reached else f"> {max(curve)}" if curve else "—"
