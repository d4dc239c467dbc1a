"""Compare RL runs and evaluations from their local folders: a markdown table and PNG curves (no network).

Evaluations are paired (Δ ± paired standard error on the requests both scored) only when they are
comparable: the same data (by fingerprint, see :mod:`eg_grpo.io`) and the same split. Two
evaluations of different datasets share request ids 0..N-1 and would otherwise "pair" on rows that
are different requests.

RL arms put side by side (the run folders, and the models of the evaluation folders) must hold
equal what an arm comparison holds equal (:mod:`eg_grpo.eval.comparability`: steps, prompts per
step, learning rate and schedule, RL rows, data / SID / start-model fingerprints, and the same seeds
in every arm); they may differ in ``training_objective`` and ``num_expert_samples``, and the SFT model
is not an arm. By default a difference is refused (:class:`~eg_grpo.eval.comparability.ComparabilityError`
naming the key and both values); with ``allow_incomparable`` the comparison is written with a
warning line above the tables instead: a table people read later must carry the caveat with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.eval.comparability import ComparabilityError, differences, label_problem, name_label, run_facts
from eg_grpo.io import read_stage


@dataclass
class CompareArguments:
    """Arguments of ``recipes/compare.py``.

    Args:
        run_dirs: RL output folders (``log_history.json`` or checkpoints); also accepted as positional arguments.
        eval_dirs: evaluation folders (``eval_results.json``; ``per_request.csv`` pairs them with the first).
        output_dir: where ``comparison.md``, ``curves.png`` and (when the runs logged the oracle curves)
            ``reward_hacking.png`` go.
        allow_incomparable: write the comparison of RL arms that differ in what it holds equal, with a
            warning line, instead of refusing it.
    """

    run_dirs: list[str] = field(default_factory=list, metadata={"help": "RL output folders."})
    eval_dirs: list[str] = field(
        default_factory=list, metadata={"help": "Evaluation folders; the first is the baseline."}
    )
    output_dir: str = field(
        default="outputs/compare", metadata={"help": "Where comparison.md and curves.png go."}
    )
    allow_incomparable: bool = field(
        default=False, metadata={"help": "Compare RL arms of other steps, lr, rows, ... with a warning line."}
    )


def arm_differences(run_dirs: list[str], eval_dirs: list[str]) -> tuple[list[str], list[str]]:
    """What the RL arms among the run folders, and among the evaluated models, do not hold equal.

    A folder named as the chain names runs (``eg_grpo``, ``vanilla_grpo_s1``, ``continued_sft``) must
    also hold (or evaluate) that kind of model (:func:`~eg_grpo.eval.comparability.name_label`).

    Returns:
        ``(differences, notes)``: ``key: value (runs) vs value (runs)`` lines, and the folders that
        could not be checked (listed only when some RL arm could be, so plain evaluations stay quiet).
    """
    out, notes = [], []
    for what, dirs in (("RL runs", run_dirs), ("evaluated models", eval_dirs)):
        facts = [run_facts(d) for d in dirs]
        out += [p for f in facts if (label := name_label(f.name)) and (p := label_problem(label, f))]
        out += [f"{what}: {d}" for d in differences(facts)]
        if any(f.stage == "rl" for f in facts):
            notes += [f"{f.name}: comparability not checked: {f.note}" for f in facts if f.note]
    return out, notes


def evaluation_lineage(eval_dir: str | Path) -> tuple[str | None, str | None]:
    """``(data fingerprint, split)`` of an evaluation folder (None where it does not record them)."""
    record = read_stage(eval_dir) or {}
    fp = ((record.get("inputs") or {}).get("data") or {}).get("fingerprint")
    split = ((record.get("config") or {}).get("settings") or {}).get("split")
    results = Path(eval_dir) / "eval_results.json"
    if results.is_file() and (fp is None or split is None):
        data = json.loads(results.read_text())
        fp, split = fp or data.get("data_fingerprint"), split or data.get("split")
    return fp, split


def comparable_groups(eval_dirs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """The folders comparable with the first, and a note per folder left out (which lineage differs)."""
    base, (base_fp, base_split) = Path(eval_dirs[0]), evaluation_lineage(eval_dirs[0])
    keep, notes = [base], []
    for d in map(Path, eval_dirs[1:]):
        fp, split = evaluation_lineage(d)
        if fp and base_fp and fp != base_fp:
            notes.append(f"{d.name}: not paired with {base.name}: other data (fingerprint {fp} vs {base_fp})")
        elif split and base_split and split != base_split:
            notes.append(f"{d.name}: not paired with {base.name}: split {split!r} vs {base_split!r}")
        else:
            keep.append(d)
    return keep, notes


def _check_dirs(dirs: list[str], what: str, needs: tuple[str, ...]) -> None:
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise FileNotFoundError(f"{what} folder {d} does not exist (resolved against {Path.cwd()})")
        if needs and not any((path / n).exists() for n in needs) and not any(path.glob("checkpoint-*")):
            raise FileNotFoundError(f"{what} folder {d} holds none of {', '.join(needs)}")


def _check_eval_dirs(dirs: list[str]) -> None:
    """Refuses a folder that is not an evaluation (a model folder passed by mistake used to drop a row)."""
    _check_dirs(dirs, "evaluation", ())
    for d in dirs:
        path = Path(d)
        if (path / "eval_results.json").is_file():
            continue
        trained = any(path.glob("checkpoint-*")) or (path / "config.json").is_file()
        what = "a training output (model or checkpoints)" if trained else "a folder"
        raise ValueError(
            f"evaluation folder {d} is not an evaluation: it is {what} without eval_results.json; "
            f"evaluate it first (python recipes/evaluate.py --model_dir {d} --data_dir DATA --sid_dir SIDS "
            f"--output_dir EVAL_DIR) and pass EVAL_DIR"
        )


def run(args: CompareArguments) -> str:
    """Writes ``comparison.md`` (and ``curves.png`` for RL runs); returns the markdown."""
    from eg_grpo.report import (
        paired_table,
        plot_curves,
        plot_reward_hacking,
        reward_hacking_table,
        test_table,
        training_table,
    )

    if not args.run_dirs and not args.eval_dirs:
        raise SystemExit("compare.py: give RL run folders, --eval_dirs, or both")
    _check_dirs(args.run_dirs, "RL run", ("log_history.json",))
    _check_eval_dirs(args.eval_dirs)
    diffs, unchecked = arm_differences(args.run_dirs, args.eval_dirs)
    if diffs and not args.allow_incomparable:
        raise ComparabilityError(
            "compare.py: the RL arms are not comparable:\n" + "\n".join(f"  - {d}" for d in diffs)
            + "\nFix: compare runs that differ only in training_objective and num_expert_samples (and in seed "
            "within one arm: every arm with the same seeds); retrain the odd run with the others' settings, or "
            "pass --allow_incomparable true to write the comparison with a warning line."
        )  # fmt: skip
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"**WARNING: not comparable** (allow_incomparable): {d}" for d in diffs]
    parts += [training_table(args.run_dirs)] if args.run_dirs else []
    if hacking := args.run_dirs and reward_hacking_table(args.run_dirs):
        parts.append(
            "Learned reward vs the oracle (held-out requests, simulated; first → last):\n\n" + hacking
        )
    if args.eval_dirs:
        parts.append(test_table(args.eval_dirs))
        comparable, notes = comparable_groups(args.eval_dirs)
        paired = paired_table(comparable)
        if paired:
            parts.append(
                "Paired with the first (same data and split, same rows; Δ ± standard error):\n\n" + paired
            )
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
    if unchecked:
        parts.append("\n".join(f"- {n}" for n in unchecked))
    table = "\n\n".join(parts)
    (out / "comparison.md").write_text(table + "\n")
    written = [out / "comparison.md"]
    if args.run_dirs:
        written.append(plot_curves(args.run_dirs, out / "curves.png"))
        if (hacking_png := plot_reward_hacking(args.run_dirs, out / "reward_hacking.png")) is not None:
            written.append(hacking_png)
    print(table)
    print("\nwrote " + ", ".join(map(str, written)))
    return table
