"""The arena's results as markdown (``arena.md``, or a section of the chain's report) and PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LIFT_FIGURES = (
    ("ctr", "CTR"),
    ("ctcvr", "CTCVR"),
    ("gmv", "GMV"),
    ("relevance", "rel"),
    ("grade3_share", "grade-3"),
)
SHARES = (("exposures", "exp"), ("clicks", "clk"), ("purchases", "pur"))


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.2f}"


def _lift_cell(lift: dict) -> str:
    """``+1.23 ± 0.45`` (relative lift in %, 1.96 SE); ``*`` when significant after Holm's correction over
    the run's comparisons (results written before the correction: when the 95 % interval excludes 0)."""
    lo, hi = lift["lift_ci95"]
    if "significant" in lift:
        star = "*" if lift["significant"] else ""
    else:
        star = "*" if np.isfinite(lo) and (lo > 0 or hi < 0) else ""
    if not np.isfinite(lift["lift"]):
        return "n/a"
    return f"{100 * lift['lift']:+.2f} ± {100 * 1.96 * lift['lift_se']:.2f}{star}"


def result_views(results: dict) -> list[dict]:
    """The control views of ``arena_results.json``, the leading one first: each ``name``, ``control``
    (its ``channel:quota`` list; None in results written before the views), ``stages`` and ``suffix``
    (of its PNGs)."""
    lead = results.get("leading_view") or {}
    views = [
        {"name": lead.get("name"), "control": lead.get("control"), "stages": results["stages"], "suffix": ""}
    ]
    for view in results.get("control_views") or []:
        views.append({**view, "suffix": f"_{view['name']}"})
    return views


def control_title(view: dict) -> str:
    """``control `legacy` (logged:48)``: what a view's control is (``control`` when unrecorded)."""
    if view["control"] is None:
        return "control"
    return f"control `{view['name']}` (" + " + ".join(view["control"]) + ")"


def render_arena_section(results: dict, heading: str = "##") -> str:
    """The arena as markdown: per control view (the leading one first) one table per ranking stage and
    budget mode, then the channels, the comparisons and the new-item figures.

    Args:
        results: the ``arena_results.json`` dict.
        heading: the markdown heading level of the section.
    """
    paper = results["paper"]
    comparisons = results.get("comparisons")
    if comparisons:
        stars = (
            f"* = significant after {comparisons['method'].capitalize()}'s correction over the "
            f"{len(comparisons['family'])} comparisons named before play (arena_results.json) at a family-wise error of "
            f"{100 * comparisons['alpha']:g} %"
        )
    else:
        stars = "* = the 95 % interval excludes 0, uncorrected"
    clustered = (
        f" in {results['num_users']} users, standard errors clustered by user"
        if "num_users" in results
        else ""
    )
    lines = [
        f"{heading} Search-funnel arena (simulated online A/B)",
        "",
        f"Simulated: {results['num_requests']} {results['split']} requests{clustered} of "
        f"`{results['data_dir']}` ({results.get('sample', 'first')} sample), "
        f"{results['mean_exposed']:.1f} items exposed per request; every figure is an expectation under the "
        "simulator's click and purchase model. Lifts are relative to control in %, ± 1.96 paired standard "
        f"errors ({stars}). `cand` = mean candidates per request the arm sends to ranking (in `fixed_budget` "
        "exactly the control's, request by request). Shares are the added channel's share of "
        "the arm's exposures / clicks / purchases, counted over items only it brought (only) and items it "
        f"brought at all (any). Paper ({paper['source']}): shares {100 * paper['exposure_share']:.2f} / "
        f"{100 * paper['click_share']:.2f} / {100 * paper['purchase_share']:.2f} %, GMV "
        f"+{100 * paper['gmv_lift']:.2f} %, UCTCVR +{100 * paper['uctcvr_lift']:.2f} %.",
        "",
    ]
    views = result_views(results)
    if len(views) > 1:
        lines += [
            f"The requests are played under {len(views)} controls (control views), each channel recalled once "
            "for all of them; in each, an arm adds one channel that control lacks to it. The first view leads.",
            "",
        ]
    for view in views:
        lines += _view_tables(view, heading + "#")
    lines += [
        "| channel | quota | items/request | recall of logged clicks | latency p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ch in results["channels"].items():
        rec = ch["recall_of_logged_clicks"]
        lines.append(
            f"| {name} | {ch['quota']} | {ch['mean_items']:.1f} | {'n/a' if rec is None else f'{rec:.3f}'} | "
            f"{ch['latency_ms']['p50']:.2f} / {ch['latency_ms']['p99']:.2f} |"
        )
    lines += [
        "",
        "Recall of logged clicks favours `logged`: the clicks were drawn from what the legacy system showed.",
        "",
    ]
    if comparisons:
        lines += [
            f"Comparisons named from the configuration before play ({comparisons['method'].capitalize()}, "
            f"family-wise error {100 * comparisons['alpha']:g} %; {comparisons['num_significant']} of "
            f"{len(comparisons['family'])} significant): every treatment arm against control on every figure, "
            "in every ranking stage and budget mode, and every later generative arm against the first, in every "
            "control view. `*` in the tables above marks a lift significant after the correction; "
            "`arena_results.json` lists the family (`comparisons.family`; another view's names start `view:`).",
            "",
            _family_counts(comparisons),
            "",
        ]
    from eg_grpo.arena.live import render_new_items  # live imports the channels: kept out of this import

    lines += render_new_items(results)
    return "\n".join(lines)


def _family_counts(comparisons: dict) -> str:
    """One line: per control view, how many of its comparisons are significant of how many named (the
    family's names are ``[view:]stage/budget/arm/figure``; the leading view's carry no prefix)."""

    def view_of(name: str) -> str:
        # the prefix sits before the ranking stage (no ':' in a stage name); arm names may hold anything
        head = name.split("/", 1)[0]
        return head.split(":", 1)[0] if ":" in head else "leading view"

    named: dict[str, int] = {}
    for name in comparisons["family"]:
        named[view_of(name)] = named.get(view_of(name), 0) + 1
    if "significant" not in comparisons:  # results written before the record listed them
        return "Named, by view: " + "; ".join(f"{view}: {n}" for view, n in named.items()) + "."
    hits = dict.fromkeys(named, 0)
    for name in comparisons["significant"]:
        hits[view_of(name)] += 1
    return (
        "Significant of named, by view: "
        + "; ".join(f"{v}: {hits[v]} of {n}" for v, n in named.items())
        + "."
    )


def _view_tables(view: dict, heading: str) -> list[str]:
    """One control view's tables (a heading naming its control, when recorded)."""
    lines = []
    if view["control"] is not None:
        arms = [a for out in next(iter(view["stages"].values()), {}).values() for a in out["arms"]]
        lines += [f"{heading} Lifts over {control_title(view)}", "",
                  "Each arm adds one channel to this control: " + ", ".join(f"`{a}`" for a in dict.fromkeys(arms))
                  + ".", ""]  # fmt: skip
    for stage, modes in view["stages"].items():
        for mode, out in modes.items():
            c = out["control"]
            cand = out.get("control_mean_candidates")
            lines += [
                f"**Ranking stage `{stage}`, budget `{mode}`** (control: CTR {c['ctr']:.4f}, CTCVR "
                f"{c['ctcvr']:.5f}, GMV {c['gmv']:.3f} per request, relevance {c['relevance']:.3f}, "
                f"grade-3 {100 * c['grade3_share']:.1f} %"
                + ("" if cand is None else f", {cand:.1f} candidates per request")
                + ")",
                "",
                "| arm | cand | "
                + " | ".join(f"{label} %" for _, label in LIFT_FIGURES)
                + " | share only exp/clk/pur % | share any exp/clk/pur % |",
                "|---|" + "---:|" * (len(LIFT_FIGURES) + 3),
            ]
            for arm, res in out["arms"].items():
                cells = [_lift_cell(res["lifts"][fig]) for fig, _ in LIFT_FIGURES]
                shares = [
                    " / ".join(f"{100 * res['shares'][way][what]:.1f}" for what, _ in SHARES)
                    for way in ("only", "any")
                ]
                n_cand = res.get("mean_candidates")
                cells = ["n/a" if n_cand is None else f"{n_cand:.1f}"] + cells
                lines.append(f"| {arm} | " + " | ".join(cells + shares) + " |")
            lines.append("")
            if versus := out.get("versus_first_generative"):
                lines += [
                    f"Generative arms against `{versus['baseline']}` (paired by request, %):",
                    "",
                    "| arm | " + " | ".join(f"{label} %" for _, label in LIFT_FIGURES) + " |",
                    "|---|" + "---:|" * len(LIFT_FIGURES),
                ]
                for arm, lifts in versus["arms"].items():
                    lines.append(
                        f"| {arm} | " + " | ".join(_lift_cell(lifts[f]) for f, _ in LIFT_FIGURES) + " |"
                    )
                lines.append("")
    return lines


def _grid(stages: dict):
    """A figure with a panel per ranking stage (rows) x budget mode (columns), and the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(stages), max(len(m) for m in stages.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.5 * n_cols, 4.0 * n_rows), squeeze=False)
    panels = [
        (axes[i][j], stage, mode, out)
        for i, (stage, modes) in enumerate(stages.items())
        for j, (mode, out) in enumerate(modes.items())
    ]
    return plt, fig, panels


def plot_lifts(results: dict, path: str | Path, view: int = 0) -> None:
    """Relative lifts of CTR, CTCVR and GMV per arm with 95 % error bars, a panel per stage x mode, of
    control view number ``view`` (:func:`result_views`)."""
    chosen = result_views(results)[view]
    plt, fig, panels = _grid(chosen["stages"])
    for ax, stage, mode, out in panels:
        arms = list(out["arms"])
        x = np.arange(len(arms))
        for k, (fig_name, label) in enumerate(LIFT_FIGURES[:3]):
            lifts = [out["arms"][a]["lifts"][fig_name] for a in arms]
            ax.bar(x + (k - 1) * 0.27, [100 * v["lift"] for v in lifts], 0.27, label=label,
                   yerr=[100 * 1.96 * v["lift_se"] for v in lifts], capsize=2)  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(100 * results["paper"]["gmv_lift"], color="grey", ls="--", lw=0.8, label="paper GMV")
        ax.set_xticks(x, arms, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{stage} ranker, {mode}", fontsize=10)
        ax.set_ylabel("lift over control, % (simulated)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Search-funnel arena: lifts over {control_title(chosen).replace('`', '')} (SIMULATED, 95 % "
                 "paired CI)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shares(results: dict, path: str | Path, view: int = 0) -> None:
    """The added channel's share of exposures, clicks and purchases per arm (solid: any, hatched:
    only), beside the paper's shares, in control view number ``view``."""
    chosen = result_views(results)[view]
    plt, fig, panels = _grid(chosen["stages"])
    paper = results["paper"]
    colours = ("tab:blue", "tab:orange", "tab:green")
    for ax, stage, mode, out in panels:
        arms = list(out["arms"])
        x = np.arange(len(arms) + 1)
        for k, (what, label) in enumerate(SHARES):
            anyv = [100 * out["arms"][a]["shares"]["any"][what] for a in arms]
            only = [100 * out["arms"][a]["shares"]["only"][what] for a in arms]
            ref = (
                100
                * paper[
                    {"exposures": "exposure_share", "clicks": "click_share", "purchases": "purchase_share"}[
                        what
                    ]
                ]
            )
            ax.bar(
                x + (k - 1) * 0.27, anyv + [ref], 0.27, color=colours[k], alpha=0.45, label=f"{label} (any)"
            )
            ax.bar(x[:-1] + (k - 1) * 0.27, only, 0.27, color=colours[k], hatch="//", label=f"{label} (only)")
        ax.set_xticks(x, arms + ["paper"], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"{stage} ranker, {mode}", fontsize=10)
        ax.set_ylabel("share of the arm, % (simulated)")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Search-funnel arena: the added channel's share, {control_title(chosen).replace('`', '')} "
                 "(SIMULATED)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, folder: str | Path) -> None:
    """Writes ``arena.md``, ``arena_lifts.png`` and ``arena_shares.png`` (the leading view's) into ``folder``,
    and ``arena_lifts_<view>.png`` and ``arena_shares_<view>.png`` per further control view."""
    folder = Path(folder)
    (folder / "arena.md").write_text(render_arena_section(results, heading="#"))
    for i, view in enumerate(result_views(results)):
        plot_lifts(results, folder / f"arena_lifts{view['suffix']}.png", view=i)
        plot_shares(results, folder / f"arena_shares{view['suffix']}.png", view=i)
