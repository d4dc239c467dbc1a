"""The selection rule on valid, and the named comparisons on test, from the arenas' per-request figures.

**Selection** (per arm, on the tuning arena's valid requests): the trial with the highest mean of the
selection metric (expected purchases per request) is the leader. A trial whose paired shortfall to the
leader, ``mean(x_lead - x_t)``, is at most one standard error of that difference (clustered by user) is
tied with it; among the tied trials the one with the higher valid HR@10 wins, then the one with fewer
steps, then the earlier one in the grid. Only valid figures are read.

**Comparisons** (on the test arena): for a pair ``A - B`` of arms, each request's difference is
``mean_s A_s,i - mean_s B_s,i`` over the test seeds ``s`` (the start model ``sft`` is one model and
plays every seed); its mean and clustered standard error come from
:func:`eg_grpo.arena.stats.paired_lift`, the p-value from the difference and its SE (normal), and the
family of named comparisons is Holm-corrected. The seed-to-seed spread (the standard deviation of the
per-seed paired differences) is reported beside the SE, not folded into it: the SE is the request-level
uncertainty of the seed-averaged arms, the spread says how much one more seed would move them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.arena.config import GENERATIVE_PREFIX
from eg_grpo.arena.stats import holm, paired_lift, two_sided_p
from eg_grpo.io import folder_fingerprint, write_json
from eg_grpo.protocol.config import START_MODEL, ProtocolConfig, Trial
from eg_grpo.protocol.run import SELECTION_FILE, tune_dirs


def arm_figures(per_request: pd.DataFrame, stage: str, mode: str, metric: str) -> tuple[dict, np.ndarray]:
    """``({arm: (B,) values of metric}, (B,) users)`` of one ranking stage and budget mode of an arena's
    ``per_request.parquet``, every arm aligned on the same requests. A generative arm is named by its model
    (the arena's ``+gen_<name>`` becomes ``<name>``); the control is ``control``, other arms keep their names."""
    part = per_request[(per_request["stage"] == stage) & (per_request["budget_mode"] == mode)]
    if part.empty:
        raise ValueError(f"the arena has no figures for ranking stage {stage!r} and budget mode {mode!r}")
    control = part[part["arm"] == "control"].sort_values("request_id")
    order = control["request_id"].to_numpy()
    figures = {}
    for arm, rows in part.groupby("arm", sort=False):
        rows = rows.sort_values("request_id")
        if not np.array_equal(rows["request_id"].to_numpy(), order):
            raise ValueError(f"arena arm {arm!r} was not played on the control's requests")
        figures[arm.removeprefix("+" + GENERATIVE_PREFIX)] = rows[metric].to_numpy(dtype=float)
    return figures, control["user_id"].to_numpy()


def select_trial(values: dict[str, np.ndarray], users: np.ndarray, hr10: dict[str, float] | None,
                 trials: list[Trial]) -> dict:  # fmt: skip
    """The selection rule (module docstring) over one arm's trials.

    Args:
        values: trial name -> ``(B,)`` per-request metric on the valid requests.
        users: ``(B,)`` the user of each request (the clusters of the standard error).
        hr10: trial name -> valid HR@10; None when HR@10 is the selection metric itself (a tie-break by
            the metric would always keep the leader), so ties go straight to fewer steps.
        trials: the arm's trials, in grid order.

    Returns:
        ``{"chosen": {"name", "settings"}, "leader": name, "trials": [{name, settings, mean, shortfall,
        shortfall_se, tied, hr@10}, ...]}``.
    """
    leader = max(trials, key=lambda t: (float(values[t.name].mean()), -trials.index(t))).name
    by_hr10 = hr10 is not None
    hr10 = hr10 if by_hr10 else dict.fromkeys(values, float("nan"))
    rows = []
    for t in trials:
        gap = paired_lift(values[leader], values[t.name], users)  # leader - trial, >= 0 by construction
        rows.append({"name": t.name, "settings": t.settings, "mean": float(values[t.name].mean()),
                     "shortfall": gap["diff"], "shortfall_se": gap["diff_se"],
                     "tied": t.name == leader or gap["diff"] <= gap["diff_se"], "hr@10": hr10[t.name]})  # fmt: skip
    tied = [(r, t) for r, t in zip(rows, trials, strict=True) if r["tied"]]
    best, trial = min(
        tied, key=lambda rt: (-rt[0]["hr@10"] if by_hr10 else 0.0, rt[1].steps or 0, trials.index(rt[1]))
    )
    return {"chosen": {"name": best["name"], "settings": trial.settings}, "leader": leader, "trials": rows}


def select_all(config: ProtocolConfig) -> dict:
    """Applies the selection rule to every arm from the tuning outputs; writes ``selection.json``."""
    root = config.output_root.resolve()
    sel = config.selection
    out = {"rule": __doc__.split("**Comparisons**")[0].strip(), "selection": sel,
           "grids": {name: arm.grid for name, arm in config.arms.items()}, "arms": {}}  # fmt: skip
    for name, arm in config.arms.items():
        trials = arm.trials()
        evals = {t.name: tune_dirs(root, t)[1] for t in trials}
        if config.hit_k is None:
            values, users = _tuning_arena_figures(root / "tune" / name / "arena", sel, trials)
        else:  # no funnel: the trials' own valid evaluations, and the start model's
            models = {START_MODEL: root / "tune" / "sft_eval", **evals}
            values, users = hit_figures(models, config.inputs["tune"]["data_dir"], config.hit_k, "valid")
        hr10 = {t.name: eval_hr10(d) for t, d in zip(trials, evals.values(), strict=True)}
        out["arms"][name] = select_trial(values, users, None if config.hit_k == 10 else hr10, trials)
        same = identical_models({t.name: tune_dirs(root, t)[0] for t in trials})
        for row in out["arms"][name]["trials"]:
            row["hr@10"] = hr10[row["name"]]  # shown either way
            row["same_model_as"] = same.get(row["name"])
        out["arms"][name]["start_model_mean"] = float(values[START_MODEL].mean())
        out["num_requests"], out["num_users"] = len(users), len(np.unique(users))
    out["start_model_hr@10"] = eval_hr10(root / "tune" / "sft_eval")  # the trials' reference on valid
    _refuse_a_new_choice_after_test(root, out)
    write_json(root / SELECTION_FILE, out)
    return out


def identical_models(model_dirs: dict[str, Path]) -> dict[str, str]:
    """``{trial: the earlier trial}`` for every trial whose saved weights are byte-identical to an earlier one's:
    a knob that changed nothing (e.g. ``num_expert_samples: 2`` of the supervised control where each prompt has
    one logged item), so the arm had fewer distinct trials than its grid says. The weights are the folder's
    top-level ``*.safetensors`` and ``*.bin`` files (full models, adapters, shards); folders without any are
    skipped. Only folders whose files have the same names and sizes are read and hashed."""
    files = {name: _weight_files(Path(folder)) for name, folder in model_dirs.items()}
    by_shape: dict[tuple, list[str]] = {}
    for name, found in files.items():
        if found:
            by_shape.setdefault(tuple((f.name, f.stat().st_size) for f in found), []).append(name)
    same = {}
    for names in by_shape.values():
        if len(names) < 2:  # no other folder has these files' names and sizes: no copy, nothing to read
            continue
        first: dict[str, str] = {}
        for name in names:
            earlier = first.setdefault(_digest(files[name]), name)
            if earlier != name:
                same[name] = earlier
    return {name: same[name] for name in model_dirs if name in same}


def _weight_files(folder: Path) -> list[Path]:
    found = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
    return sorted(f for f in found if f.name != "training_args.bin")  # TrainingArguments, not weights


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _tuning_arena_figures(arena: Path, sel: dict, trials: list[Trial]) -> tuple[dict, np.ndarray]:
    if not (arena / "per_request.parquet").is_file():
        raise FileNotFoundError(f"{arena} holds no per_request.parquet: run the tuning first (--step tune)")
    split = json.loads((arena / "arena_results.json").read_text())["split"]
    if split != "valid":
        raise ValueError(f"{arena} played the {split!r} split; the selection reads valid only")
    frame = pd.read_parquet(arena / "per_request.parquet")
    values, users = arm_figures(frame, sel["ranking_stage"], sel["budget_mode"], sel["metric"])
    missing = [t.name for t in trials if t.name not in values]
    if missing:
        raise ValueError(f"{arena} has no arm for the trial(s) {missing} (was the grid edited after the "
                         "tuning?): re-run --step tune")  # fmt: skip
    return values, users


def hit_figures(evals: dict[str, Path], data_dir: str | Path, k: int, split: str) -> tuple[dict, np.ndarray]:
    """``({model: (B,) 0/1 hit of the target SID in its top k}, (B,) users)`` from evaluation folders'
    ``per_request.csv`` (``target_rank``: 0-based, -1 when absent), aligned on the request ids every one
    scored, with each request's user from ``data_dir``'s requests (the clusters of the standard errors).

    Raises:
        FileNotFoundError: an evaluation is missing (run the step that makes it first).
        ValueError: an evaluation of another split, or of other requests than the others.
    """
    ranks, data_print = {}, folder_fingerprint(data_dir)
    for name, folder in evals.items():
        folder = Path(folder)
        if not (folder / "per_request.csv").is_file():
            raise FileNotFoundError(
                f"{folder} holds no per_request.csv: run the step that evaluates {name} first"
            )
        results = json.loads((folder / "eval_results.json").read_text())
        if results.get("split") != split:
            raise ValueError(
                f"{folder} evaluated the {results.get('split')!r} split; this step reads {split}"
            )
        if results.get("data_fingerprint", data_print) != data_print:  # e.g. the other layout's evaluation
            raise ValueError(f"{folder} evaluated other data than {data_dir}: re-run its evaluation")
        ranks[name] = (
            pd.read_csv(folder / "per_request.csv").set_index("request_id")["target_rank"].sort_index()
        )
    first = next(iter(ranks.values()))
    for name, r in ranks.items():
        if not r.index.equals(first.index):
            raise ValueError(
                f"the evaluation of {name} scored other requests than the others: compare like with like"
            )
    requests = pd.read_parquet(Path(data_dir) / "requests.parquet", columns=["request_id", "user_id"])
    users = requests.set_index("request_id")["user_id"].reindex(first.index)
    if users.isna().any():
        raise ValueError(f"{data_dir} lacks requests the evaluations scored: evaluations of other data?")
    hits = {name: ((r >= 0) & (r < k)).to_numpy(dtype=float) for name, r in ranks.items()}
    return hits, users.to_numpy()


def _refuse_a_new_choice_after_test(root: Path, selection: dict) -> None:
    """Test is read once: once test runs exist, a selection that would choose otherwise is refused (a new
    choice made after seeing test would be a choice by test)."""
    path = root / "test" / SELECTION_FILE  # written by the test step before its first run
    if not path.is_file():
        return
    before = {arm: s["chosen"] for arm, s in json.loads(path.read_text())["arms"].items()}
    now = {arm: s["chosen"] for arm, s in selection["arms"].items()}
    if before != now:
        raise ValueError(
            f"{root / 'test'} holds test runs of the selection {before}; the tuning now selects {now}. The "
            "protocol reads test once: to start over, remove the test folder and record why as a dated "
            "amendment in docs/protocol.md"
        )


def eval_hr10(eval_dir: Path) -> float:
    """The ``hr@10`` of an evaluation folder."""
    return float(json.loads((Path(eval_dir) / "eval_results.json").read_text())["hr@10"])


def seed_comparison(a: list[np.ndarray], b: list[np.ndarray], users: np.ndarray) -> dict:
    """``A - B`` averaged over seeds (module docstring). ``a`` and ``b`` hold one ``(B,)`` array per seed
    (the same seeds in the same order; either may hold one array: a model that plays every seed).

    Returns:
        :func:`~eg_grpo.arena.stats.paired_lift`'s figures of the seed means (``diff``, ``diff_se``,
        ``lift``, ``lift_se``, ...), ``p`` of ``diff / diff_se``, ``per_seed_diff`` and ``seed_sd``.
    """
    if len(a) == 1:
        a = a * len(b)
    if len(b) == 1:
        b = b * len(a)
    if len(a) != len(b):
        raise ValueError(f"the arms have {len(a)} and {len(b)} seeds; a comparison pairs the same seeds")
    out = paired_lift(np.mean(a, axis=0), np.mean(b, axis=0), users)
    out["p"] = two_sided_p(out["diff"], out["diff_se"])
    out["per_seed_diff"] = [float(np.mean(x - y)) for x, y in zip(a, b, strict=True)]
    out["seed_sd"] = float(np.std(out["per_seed_diff"], ddof=1)) if len(a) > 1 else float("nan")
    return out


def named_comparisons(figures: dict[str, np.ndarray], users: np.ndarray, arms: dict[str, list[str]],
                      pairs: list[tuple[str, str]], holm_family: bool = True) -> dict:  # fmt: skip
    """Every named ``A - B`` (:func:`seed_comparison`), with Holm's correction over the family.

    Args:
        figures: arena model name -> ``(B,)`` values (``sft``, ``eg_grpo_s0``, ...).
        users: ``(B,)`` clusters.
        arms: arm -> its model names in seed order (``sft`` -> ``["sft"]``).
        pairs: the named comparisons.
        holm_family: mark ``significant_holm`` (the primary family); False for descriptive figures.
    """
    out = {
        f"{a} - {b}": seed_comparison([figures[m] for m in arms[a]], [figures[m] for m in arms[b]], users)
        for a, b in pairs
    }
    if holm_family:
        significant = holm({name: c["p"] for name, c in out.items()})
        for name, c in out.items():
            c["significant_holm"] = significant[name]
    return out
