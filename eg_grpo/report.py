"""Comparison tables and curves from local run folders (no network), and the chain's report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from eg_grpo.eval.metrics import paired_difference  # noqa: E402

# Curves a person compares vanilla and expert-guided runs on: title -> (logged keys, the first one
# found in a run is used; y-axis label). Rewards are those of the policy's own samples (TRL's `reward`
# counts the spliced ground truth too); `reward` is only the fallback for runs logged before the
# sampled-only twins existed.
CURVES = {
    "reward of policy samples (weighted sum)": (["eg/reward_sampled", "reward"], "reward per completion"),
    "zero-spread group fraction": (["eg/zero_std_group_frac", "frac_reward_zero_std"], "fraction of groups"),
    "distinct SIDs per group (policy samples)": (["eg/distinct_sids_per_group"], "distinct SIDs"),
    "hit rate of policy samples": (["eg/hit_rate_sampled"], "hit rate"),
    "valid-split HR@10": (["valid/hr@10"], "HR@10"),
    "full model's mass on valid first tokens": (["eg/valid_mass_first"], "probability mass"),
}
# Reward hacking in view: what RL optimises (the learned rewards) beside what the simulator's users do
# (the arena's oracle, on simulated data only; see eg_grpo.rl.oracle_curves). A run whose learned reward
# rises while the oracle's lifts fall is visible at a glance.
REWARD_HACKING = {
    "learned reward (training samples)": (["eg/reward_sampled", "reward"], "weighted reward"),
    "learned reward (held-out beam)": (["eg/learned_reward"], "weighted reward"),
    "oracle GMV lift (held-out, simulated)": (["eg/oracle_gmv_lift"], "lift over control"),
    "oracle purchases lift": (["eg/oracle_purchases_lift"], "lift over control"),
    "oracle clicks lift": (["eg/oracle_clicks_lift"], "lift over control"),
}
REWARD_HACKING_COLUMNS = 3
ORACLE_LIFT_KEYS = ("eg/oracle_gmv_lift", "eg/oracle_purchases_lift", "eg/oracle_clicks_lift")
# One style per run, so identical curves (e.g. two runs before their experts make a difference) stay
# visible: a line style, a marker, and a width that shrinks, so a later line never covers an earlier one.
RUN_STYLES = [
    ("-", "o", 2.6),
    ("--", "s", 1.9),
    (":", "^", 1.5),
    ("-.", "D", 1.2),
    ((0, (5, 1, 1, 1)), "v", 1.0),
]
TEST_METRICS = [
    "hr@10",
    "ndcg@10",
    "click_hitrate@10",
    "semantic_hitrate@10",
    "valid_sid_rate",
    "distinct_sids",
]


def load_log_history(run_dir: str | Path) -> list[dict]:
    """The trainer's log history: ``log_history.json`` (written at the end) or the newest checkpoint's state."""
    run_dir = Path(run_dir)
    if (run_dir / "log_history.json").exists():
        return json.loads((run_dir / "log_history.json").read_text())
    states = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    if not states:
        raise FileNotFoundError(f"{run_dir}: no log_history.json and no checkpoint-*/trainer_state.json")
    return json.loads(states[-1].read_text())["log_history"]


def series(history: list[dict], keys: list[str]) -> tuple[list[int], list[float], str | None]:
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h and not _nan(h[key])]
        if points:
            steps, values = zip(*points)
            return list(steps), list(values), key
    return [], [], None


def reward_objectives(history: list[dict]) -> list[str]:
    """Per-objective reward keys: the sampled-only ones when the run logged them."""
    sampled = sorted(
        {k for h in history for k in h if k.startswith("eg/rewards/") and k.endswith("/mean_sampled")}
    )
    return sampled or sorted(
        {k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}
    )


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def curves_figure(run_dirs: list[str | Path]):
    """The curves figure: one panel per curve (plus one per reward objective), one line per run."""
    histories = {Path(d).name: load_log_history(d) for d in run_dirs}
    objectives = sorted({k for h in histories.values() for k in reward_objectives(h)})
    panels = dict(CURVES) | {f"reward: {k.split('/')[-2]}": ([k], "mean reward") for k in objectives}
    return _panels_figure(panels, histories, cols=3)


def _panels_figure(
    panels: dict, histories: dict[str, list[dict]], cols: int, zero_line: tuple[str, ...] = (),
    from_zero: bool = False,
):  # fmt: skip
    """One panel per ``title -> (keys, ylabel)``, one line per run; panels in ``zero_line`` get a y = 0 line.

    With ``from_zero`` the step axis starts at 0, where a run that logged its starting (SFT) model's
    value at step 0 starts its curve, so the first RL change is seen against where RL began.
    """
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, (keys, ylabel)) in zip(axes.flat, panels.items()):
        for i, (name, history) in enumerate(histories.items()):
            steps, values, _ = series(history, keys)
            if steps:
                linestyle, marker, width = RUN_STYLES[i % len(RUN_STYLES)]
                ax.plot(steps, values, label=name, linestyle=linestyle, linewidth=width, marker=marker,
                        markersize=3, markevery=max(1, len(steps) // 12), alpha=0.85)  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (0 = the SFT start)" if from_zero else "step")
        if from_zero and ax.lines:
            ax.set_xlim(left=0)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
            if title in zero_line:  # drawn after the legend, so it is no run's line
                ax.axhline(0.0, color="grey", linewidth=0.8)
        else:  # e.g. held-out HR@K with sid_eval_steps: 0; say so rather than draw empty axes
            ax.text(0.5, 0.5, "not logged in these runs", ha="center", va="center", transform=ax.transAxes,
                    color="grey")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def has_oracle_curves(history: list[dict]) -> bool:
    return any(k in h for h in history for k in ORACLE_LIFT_KEYS)


def reward_hacking_figure(run_dirs: list[str | Path]):
    """:data:`REWARD_HACKING` panels, one line per run that logged the oracle curves; None when none did
    (real data has no oracle)."""
    histories = {Path(d).name: load_log_history(d) for d in run_dirs}
    histories = {name: h for name, h in histories.items() if has_oracle_curves(h)}
    if not histories:
        return None
    lifts = tuple(title for title, (keys, _) in REWARD_HACKING.items() if keys[0] in ORACLE_LIFT_KEYS)
    # A grid, not one strip: five panels side by side made a 2750 x 374 image unreadable at page width.
    return _panels_figure(
        REWARD_HACKING, histories, cols=REWARD_HACKING_COLUMNS, zero_line=lifts, from_zero=True
    )


def plot_reward_hacking(run_dirs: list[str | Path], out_png: str | Path) -> Path | None:
    """Writes :func:`reward_hacking_figure` to ``out_png``; None (nothing written) when no run logged it."""
    fig = reward_hacking_figure(run_dirs)
    if fig is None:
        return None
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def reward_hacking_table(run_dirs: list[str | Path]) -> str:
    """Markdown: per run that logged the oracle curves, each :data:`REWARD_HACKING` series at its first and
    last point (``first → last``); an empty string when none did."""
    lines = []
    for d in run_dirs:
        h = load_log_history(d)
        if not has_oracle_curves(h):
            continue
        cells = [Path(d).name]
        for keys, _ in REWARD_HACKING.values():
            _, values, _ = series(h, keys)
            cells.append(f"{_fmt(values[0])} → {_fmt(values[-1])}" if values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = ["run", *REWARD_HACKING]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines])


def plot_curves(run_dirs: list[str | Path], out_png: str | Path) -> Path:
    """Writes :func:`curves_figure` of ``run_dirs`` to ``out_png``; returns the path."""
    fig = curves_figure(run_dirs)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _fmt(x) -> str:
    if x is None or _nan(x):
        return "–"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def training_table(run_dirs: list[str | Path]) -> str:
    """Markdown: per run, the mean over training of the diagnostics, and the final valid HR@10."""
    header = ["run", "steps", "reward (sampled)", "zero-spread frac", "distinct SIDs/group", "hit rate (sampled)",
              "final valid HR@10"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in run_dirs:
        h = load_log_history(d)
        cells = [Path(d).name, str(max((x.get("step", 0) for x in h), default=0))]
        for title in ("reward of policy samples (weighted sum)", "zero-spread group fraction",
                      "distinct SIDs per group (policy samples)", "hit rate of policy samples"):  # fmt: skip
            _, values, _ = series(h, CURVES[title][0])
            cells.append(_fmt(sum(values) / len(values)) if values else "–")
        _, values, _ = series(h, CURVES["valid-split HR@10"][0])
        cells.append(_fmt(values[-1]) if values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_table(eval_dirs: list[str | Path]) -> str:
    """Markdown: the test metrics of each evaluated model (eval_results.json)."""
    lines = ["| model | " + " | ".join(TEST_METRICS) + " |", "|" + "---|" * (len(TEST_METRICS) + 1)]
    for d in eval_dirs:
        path = Path(d) / "eval_results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        lines.append(f"| {Path(d).name} | " + " | ".join(_fmt(results.get(m)) for m in TEST_METRICS) + " |")
    return "\n".join(lines)


def paired_table(eval_dirs: list[str | Path], k: int = 10) -> str:
    """Markdown: each evaluated model against the first, on the rows both scored (``per_request.csv``).

    The difference's standard error is the paired one (see
    :func:`eg_grpo.eval.metrics.paired_difference`); an empty string when fewer than two folders
    have per-request ranks (evaluations written before they were recorded).
    """
    ranked = [
        (Path(d), pd.read_csv(Path(d) / "per_request.csv", index_col="request_id")["target_rank"])
        for d in eval_dirs
        if (Path(d) / "per_request.csv").exists()
    ]
    if len(ranked) < 2:
        return ""
    (base_dir, base), lines = ranked[0], []
    lines += [f"| vs {base_dir.name} | HR@{k} Δ ± SE | NDCG@{k} Δ ± SE | hits only here / only there | rows |",
              "|---|---|---|---|---|"]  # fmt: skip
    for d, ranks in ranked[1:]:
        common = base.index.intersection(ranks.index)
        if len(common) == 0:
            continue
        a, b = base.loc[common].to_numpy(), ranks.loc[common].to_numpy()
        hr, ndcg = paired_difference(a, b, k, "hr"), paired_difference(a, b, k, "ndcg")
        lines.append(f"| {d.name} | {hr['diff']:+.4f} ± {hr['se']:.4f} | {ndcg['diff']:+.4f} ± {ndcg['se']:.4f} "
                     f"| {hr['b_only']} / {hr['a_only']} | {hr['n']} |")  # fmt: skip
    return "\n".join(lines)


def _share(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def sid_stats_table(stats: dict) -> str:
    """Markdown table of a SID folder's ``stats.json`` (:mod:`eg_grpo.sid.stats`); a statistic the
    folder does not record is left out."""
    rows = [("method", stats.get("method"))]
    if "num_sids" in stats:
        rows.append(("SIDs / items", f"{stats['num_sids']:,} / {stats.get('num_items', 0):,}"))
    if size := stats.get("cluster_size"):
        rows.append(
            (
                "items per SID: p50 / p99 / max",
                " / ".join(f"{size[k]:g}" for k in ("p50", "p99", "max") if k in size),
            )
        )
    if util := stats.get("level_utilization"):
        rows.append(("codes used per level", " · ".join(_share(u) for u in util)))
    if perplexity := stats.get("level_perplexity"):
        rows.append(("perplexity per level", " · ".join(f"{p:.1f}" for p in perplexity)))
    if stats.get("l1_category_purity") is not None:
        rows.append(("level-1 category purity", _share(stats["l1_category_purity"])))
    if agree := stats.get("query_item_agreement"):
        rows.append(("query-item agreement: level 1 / levels 1-2",
                     f"{_share(agree['l1'])} / {_share(agree['l12'])} ({agree.get('num_pairs', 0):,} pairs)"))  # fmt: skip
    elif "query_item_agreement" in stats:  # null: the method has no model to quantise queries with
        rows.append(("query-item agreement", "–"))
    if "build_seconds" in stats:
        rows.append(("build seconds", f"{stats['build_seconds']:.0f}"))
    lines = ["| statistic | value |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows if value is not None])


def write_report(root: str | Path, sid_dir: str | Path, rl_dirs: list[str], eval_dirs: list[str],
                 arena_dir: str | Path | None = None) -> Path:  # fmt: skip
    """Writes ``root/report/report.md``: SID statistics, test metrics, curves, beam sweeps and the arena."""
    out = Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# eg-grpo report", ""]
    stats_path = Path(sid_dir) / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        parts += ["## Semantic IDs", "", sid_stats_table(stats), ""]
    parts += ["## Test metrics", "", test_table(eval_dirs), ""]
    paired = paired_table(eval_dirs)
    if paired:
        parts += ["Paired with the first model (same test rows; Δ ± its standard error):", "", paired, ""]
    existing = [d for d in rl_dirs if Path(d).exists()]
    if existing:
        curves = plot_curves(existing, out / "training_curves.png")
        parts += ["## Training (vanilla vs expert-guided)", "", training_table(existing), "",
                  f"![training curves]({curves.name})", ""]  # fmt: skip
        hacking = plot_reward_hacking(existing, out / "reward_hacking.png")
        if hacking is not None:
            parts += ["### Learned reward vs the oracle (held-out requests, simulated)", "",
                      "What RL optimises beside what the simulator's users do: the policy's beam in the arena's "
                      "supplement funnel (legacy retrieval + 24 generative items), first → last evaluation.", "",
                      reward_hacking_table(existing), "", f"![learned reward vs oracle]({hacking.name})", ""]  # fmt: skip
    for d in eval_dirs:
        for png in sorted(Path(d).glob("*.png")):
            target = out / f"{Path(d).name}_{png.name}"
            target.write_bytes(png.read_bytes())
            parts += [f"### Beam-size sweep: {Path(d).name}", "", f"![beam sweep]({target.name})", ""]
    arena_results = Path(arena_dir or "") / "arena_results.json"
    if arena_dir is not None and arena_results.exists():
        from eg_grpo.arena import render_arena_section

        for png in sorted(Path(arena_dir).glob("*.png")):
            (out / png.name).write_bytes(png.read_bytes())
        parts += [render_arena_section(json.loads(arena_results.read_text())), ""]
        parts += [f"![{png.stem}]({png.name})" for png in sorted(Path(arena_dir).glob("*.png"))] + [""]
    report = out / "report.md"
    report.write_text("\n".join(parts))
    return report
