"""The protocol's report: the tuning table, the chosen settings, and the named comparisons on test.

Writes ``report.md``, ``results.json`` and ``protocol_lifts.png`` (each arm's lift over the start model
with its 95 % interval and one dot per seed) under ``output_root``. The primary metric is the selection's
(expected purchases per request beside the classical stack, legacy ranker, supplement); clicks and GMV
are shown beside it, descriptive, with no stars.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.io import write_json
from eg_grpo.protocol.config import START_MODEL, ProtocolConfig
from eg_grpo.protocol.run import read_selection, test_dirs
from eg_grpo.protocol.select import arm_figures, eval_hr10, hit_figures, named_comparisons

DESCRIPTIVE = ("clicks", "gmv")


def test_results(config: ProtocolConfig) -> dict:
    """The figures of the test step: per arm and seed, the named comparisons on every metric (the arena's
    figures, or the evaluations' hr@K where there is no funnel)."""
    root = config.output_root.resolve()
    seeds = config.test.seeds
    models = {START_MODEL: [START_MODEL], **{a: [f"{a}_s{s}" for s in seeds] for a in config.arms}}
    evals = {START_MODEL: root / "test" / "sft_eval",
             **{f"{a}_s{s}": test_dirs(root, a, s)[1] for a in config.arms for s in seeds}}  # fmt: skip
    out = {"seeds": seeds, "metrics": {},
           "arms": {arm: {"hr@10": [eval_hr10(evals[n]) for n in names]} for arm, names in models.items()}}  # fmt: skip
    if config.hit_k is not None:
        figures, users = hit_figures(evals, config.inputs["test"]["data_dir"], config.hit_k, "test")
        out["num_requests"], out["num_users"] = len(users), len(np.unique(users))
        out["metrics"][config.selection["metric"]] = _family(figures, users, models, config, primary=True)
        return out
    _arena_results(config, root / "test" / "arena", models, out)
    return out


def _family(figures: dict, users: np.ndarray, models: dict, config: ProtocolConfig, primary: bool) -> dict:
    return {
        "per_model_mean": {name: float(v.mean()) for name, v in figures.items()},
        "comparisons": named_comparisons(figures, users, models, config.comparisons, holm_family=primary),
        "versus_start": named_comparisons(
            figures, users, models, [(a, START_MODEL) for a in config.arms], holm_family=False
        ),
    }


def _arena_results(config: ProtocolConfig, arena_dir: Path, models: dict, out: dict) -> None:
    """The test arena's figures into ``out``: every metric's family, the control, candidates, the views."""
    frame = pd.read_parquet(arena_dir / "per_request.parquet")
    arena = json.loads((arena_dir / "arena_results.json").read_text())
    sel = config.selection
    stage = arena["stages"][sel["ranking_stage"]][sel["budget_mode"]]
    out.update(num_requests=arena["num_requests"], num_users=arena["num_users"], control=stage["control"],
               control_mean_candidates=stage["control_mean_candidates"])  # fmt: skip
    for metric in (sel["metric"], *(m for m in DESCRIPTIVE if m != sel["metric"])):
        figures, users = arm_figures(frame, sel["ranking_stage"], sel["budget_mode"], metric)
        # the selection's metric is the one family with stars; the rest is descriptive
        out["metrics"][metric] = _family(figures, users, models, config, primary=metric == sel["metric"])
    out["views"] = [
        {"view": name, "ranker": ranker, "budget": mode,
         "arms": {arm: {fig: float(np.mean([stages[ranker][mode]["arms"][f"+gen_{n}"]["lifts"][fig]["lift"]
                                           for n in names])) for fig in ("ctcvr", "gmv")}
                  for arm, names in models.items()}}
        for name, stages in [(arena["leading_view"]["name"], arena["stages"]),
                             *((v["name"], v["stages"]) for v in arena.get("control_views", []))]
        for ranker in stages for mode in stages[ranker]
    ]  # fmt: skip
    for arm, names in models.items():
        out["arms"][arm]["mean_candidates"] = float(
            np.mean([stage["arms"][f"+gen_{n}"]["mean_candidates"] for n in names])
        )


def write_report(config: ProtocolConfig) -> Path:
    """Writes ``report.md``, ``results.json`` and ``protocol_lifts.png``; returns the report's path."""
    root = config.output_root.resolve()
    selection = read_selection(config)
    results = {"selection": selection, "test": test_results(config)}
    write_json(root / "results.json", results)
    plot_lifts(results["test"], config, root / "protocol_lifts.png")
    path = root / "report.md"
    path.write_text(render(results, config))
    return path


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} %"


def render(results: dict, config: ProtocolConfig) -> str:
    sel, test = results["selection"], results["test"]
    metric = config.selection["metric"]
    funnel = config.hit_k is None  # an arena figure (simulated), else the evaluations' hr@K (real data)
    what = (f"expected {metric} per request of the channel beside the control ({config.selection['ranking_stage']} "
            f"ranker, {config.selection['budget_mode']})" if funnel else f"{metric} of the evaluations")  # fmt: skip
    lines = [
        "# The comparison protocol: results" + (" (simulated)" if funnel else ""),
        "",
        f"Selection on valid ({sel['num_requests']:,} requests, {sel['num_users']:,} users), one look at"
        f" test ({test['num_requests']:,} requests, {test['num_users']:,} users, seeds {test['seeds']}).",
        f"Metric: {what}.",
        "",
        "## Tuning (valid, seed " + str(config.tune.seeds[0]) + ")",
        "",
        f"The start model (SFT): {sel['arms'][next(iter(sel['arms']))]['start_model_mean']:.5f} {metric}/request, "
        f"valid HR@10 {sel['start_model_hr@10']:.4f}.",
        "",
        f"| arm | trial | {metric}/request | shortfall to leader ± SE | tied | valid HR@10 | same weights as | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in sel["arms"].items():
        for t in s["trials"]:
            lines.append(f"| {arm} | {t['name']} | {t['mean']:.5f} | {t['shortfall']:.5f} ± {t['shortfall_se']:.5f} "
                         f"| {'yes' if t['tied'] else ''} | {t['hr@10']:.4f} | {t.get('same_model_as') or ''} | "
                         f"{'**chosen**' if t['name'] == s['chosen']['name'] else ''} |")  # fmt: skip
    for arm, s in sel["arms"].items():
        copies = sum(bool(t.get("same_model_as")) for t in s["trials"])
        if copies:
            distinct = len(s["trials"]) - copies
            lines.append(f"\n{arm}: {len(s['trials'])} trials, {distinct} distinct model{'s' * (distinct != 1)} (a "
                         "knob changed nothing in some trials: they trained byte-identical weights).")  # fmt: skip
    lines += ["", "## Test: each arm's chosen setting, mean over seeds", "",
              f"| arm | setting | {metric}/request | lift over SFT ± SE | seed spread (sd) | HR@10 (mean of seeds) "
              "| candidates/request |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    m = test["metrics"][metric]
    for arm, facts in test["arms"].items():
        names = [START_MODEL] if arm == START_MODEL else [f"{arm}_s{s}" for s in test["seeds"]]
        mean = float(np.mean([m["per_model_mean"][n] for n in names]))
        vs = m["versus_start"].get(f"{arm} - {START_MODEL}")
        lift = f"{_pct(vs['lift'])} ± {100 * vs['lift_se']:.2f}" if vs else "(start)"
        spread = f"{vs['seed_sd']:.5f}" if vs else ""
        setting = sel["arms"][arm]["chosen"]["name"] if arm in sel["arms"] else "the start model"
        candidates = f"{facts['mean_candidates']:.1f}" if "mean_candidates" in facts else "(no funnel)"
        lines.append(f"| {arm} | {setting} | {mean:.5f} | {lift} | {spread} | {np.mean(facts['hr@10']):.4f} "
                     f"| {candidates} |")  # fmt: skip
    if funnel:
        lines += ["", f"Control alone: {test['control'][_FIG[metric]]:.5f} {metric}/request, "
                  f"{test['control_mean_candidates']:.1f} candidates/request."]  # fmt: skip
    extra = [d for d in DESCRIPTIVE if d in test["metrics"] and d != metric]
    lines += ["", "## The named comparisons (Holm over the family)", "",
              f"| comparison | Δ {metric}/request ± SE (clustered by user) | relative | p | significant (Holm, 5 %) "
              "| per-seed Δ |" + "".join(f" Δ {_LABEL[d]} |" for d in extra), "|---|---|---|---|---|---|" + "---|" * len(extra)]  # fmt: skip
    for name, c in m["comparisons"].items():
        seeds = " / ".join(f"{x:+.5f}" for x in c["per_seed_diff"])
        others = "".join(f" {_pct(test['metrics'][d]['comparisons'][name]['lift'])} |" for d in extra)
        lines.append(f"| {name} | {c['diff']:+.5f} ± {c['diff_se']:.5f} | {_pct(c['lift'])} | {_p(c['p'])} | "
                     f"{'**yes**' if c['significant_holm'] else 'no'} | {seeds} |{others}")  # fmt: skip
    lines += ["", ("Δ clicks and Δ GMV are descriptive (relative, no stars). " if extra else "")
              + "A comparison that is not significant is no evidence of a tie: docs/protocol.md states the gap "
              "these runs can detect.", ""]  # fmt: skip
    return "\n".join(lines + (views_table(test) if funnel else []))


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def views_table(test: dict) -> list[str]:
    """Descriptive: each arm's lift over each view's control (mean over its seeds), every ranker and budget."""
    lines = ["## Every view, ranker and budget mode (descriptive)", "",
             "Each arm's CTCVR / GMV lift over the view's control, mean over its seeds; no standard errors.", "",
             "| view | ranker | budget | " + " | ".join(test["arms"]) + " |",
             "|---|---|---|" + "---|" * len(test["arms"])]  # fmt: skip
    for row in test["views"]:
        cells = [
            f"{100 * row['arms'][a]['ctcvr']:+.2f} / {100 * row['arms'][a]['gmv']:+.2f} %"
            for a in test["arms"]
        ]
        lines.append(f"| {row['view']} | {row['ranker']} | {row['budget']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


_FIG = {"clicks": "ctr", "purchases": "ctcvr", "gmv": "gmv"}  # per-request metric -> arena figure name
_LABEL = {"clicks": "clicks", "gmv": "GMV"}


def plot_lifts(test: dict, config: ProtocolConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = config.selection["metric"]
    m = test["metrics"][metric]
    arms = list(config.arms)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for i, arm in enumerate(arms):
        c = m["versus_start"][f"{arm} - {START_MODEL}"]
        ax.errorbar(i, 100 * c["lift"], yerr=196 * c["lift_se"], fmt="o", capsize=4, color="C0")
        base = m["per_model_mean"][START_MODEL]
        ax.scatter([i + 0.15] * len(c["per_seed_diff"]), [100 * d / base for d in c["per_seed_diff"]],
                   s=10, color="C1", label="one seed" if i == 0 else None)  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(f"{metric}/request over SFT (%)")
    simulated = " (simulated)" if config.hit_k is None else ""
    ax.set_title(f"Test, mean of {len(test['seeds'])} seeds, 95 % intervals{simulated}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
