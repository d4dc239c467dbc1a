"""Control views: the arena's requests played under each control, every channel recalled once for all.

A view is a control (the leading one is ``control``; more come from ``control_views``) and its arms, one
per added channel its control lacks (:meth:`eg_grpo.arena.config.ArenaArguments.views`). Every view plays
the same requests on the same recalled lists, so a view's figures are those a run with that control
alone gives; its comparisons join one Holm family with every other view's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eg_grpo.arena.config import GENERATIVE_PREFIX, ArenaArguments, ControlView
from eg_grpo.arena.funnel import RankingStage, merge, play
from eg_grpo.arena.live import NewItemFigures
from eg_grpo.arena.oracle import Oracle
from eg_grpo.arena.stats import ALPHA, holm, paired_lift

# figure -> per-request metric of eg_grpo.arena.funnel.play
METRICS = {
    "ctr": "clicks",  # expected clicks per request
    "ctcvr": "purchases",  # expected purchases per request
    "gmv": "gmv",  # expected GMV per request
    "relevance": "relevance",  # mean graded relevance of the exposed items
    "grade3_share": "grade3_share",  # share of exposed items of grade 3
}

# the per-request figures a caller may keep (``play_view(keep=...)``, the arena's ``per_request.parquet``)
PER_REQUEST = ("clicks", "purchases", "gmv", "exposures")


@dataclass
class Played:
    """What every view plays on: the requests (``rows``, the items shown per request, the users that
    cluster the errors), each channel's recalled item rows, their source bits, the ranking stages by
    name and the new-item figures (None without launches)."""

    oracle: Oracle
    rows: np.ndarray
    n_exposed: np.ndarray
    users: np.ndarray
    recalled: dict[str, list[np.ndarray]]
    bits: dict[str, int]
    rankings: dict[str, RankingStage]
    newness: NewItemFigures | None = None


def arm_result(outcome, control, arm, candidates: np.ndarray, users: np.ndarray | None = None) -> dict:
    """Lifts of one arm over control (standard errors clustered by ``users``), its mean candidates per
    request (``candidates``: ``(B,)`` its merged count) and, for a treatment, the added channel's shares."""
    lifts = {
        fig: paired_lift(outcome.per_request[m], control.per_request[m], users) for fig, m in METRICS.items()
    }
    result = {
        "quotas": arm.quotas,
        "added": arm.added,
        "mean_candidates": float(np.mean(candidates)),
        "lifts": lifts,
    }
    if arm.added is not None:
        totals = {
            what: float(outcome.per_request[what].sum()) for what in ("exposures", "clicks", "purchases")
        }
        result["shares"] = {
            way: {what: (v / totals[what] if totals[what] > 0 else 0.0) for what, v in counts.items()}
            for way, counts in outcome.by_channel[arm.added].items()
        }
    return result


def play_view(view: ControlView, p: Played, budget_modes: list[str], keep: dict | None = None) -> dict:
    """The ``stages`` record of one view: per ranking stage and budget mode, its control and every arm.

    ``keep``, when given, receives each arm's per-request figures (and the control's, as ``control``) under
    ``(stage, mode, arm)``: the ``(B,)`` arrays of :data:`PER_REQUEST`, aligned with ``p.rows``.
    """
    n_req, users = len(p.rows), p.users
    base_candidates = merge(p.recalled, view.control, p.bits)
    # the control's own candidates per request: the exact budget of a fixed-budget arm (the control's
    # channels may return fewer than their quotas, so the quotas alone would not fix it)
    n_control = np.bincount(base_candidates.slot, minlength=n_req)
    stages = {}
    for stage, ranking in p.rankings.items():
        base = play(base_candidates, p.rows, p.n_exposed, p.oracle, ranking, p.bits)
        base_new = p.newness.side(base, base_candidates) if p.newness is not None else None
        stages[stage] = {}
        for mode in budget_modes:
            arms = view.arms(mode)
            budget = n_control if mode == "fixed_budget" else None
            out = {
                "control": {fig: float(base.per_request[m].mean()) for fig, m in METRICS.items()},
                "control_mean_candidates": float(n_control.mean()),
                "arms": {},
            }
            outcomes = {}
            if keep is not None:
                keep[stage, mode, "control"] = {m: base.per_request[m] for m in PER_REQUEST}
            for arm in arms[1:]:
                candidates = merge(p.recalled, arm.quotas, p.bits, budget)
                outcomes[arm.name] = play(candidates, p.rows, p.n_exposed, p.oracle, ranking, p.bits)
                if keep is not None:
                    keep[stage, mode, arm.name] = {m: outcomes[arm.name].per_request[m] for m in PER_REQUEST}
                n_arm = np.bincount(candidates.slot, minlength=n_req)
                out["arms"][arm.name] = arm_result(outcomes[arm.name], base, arm, n_arm, users)
                if p.newness is not None:
                    side = p.newness.side(outcomes[arm.name], candidates)
                    out["arms"][arm.name]["new_items"] = p.newness.compare(side, base_new)
            # An RL model against its SFT start, paired by request: far sharper than comparing two
            # lifts over control (the control-side noise cancels).
            generative = [a.name for a in arms[1:] if a.added.startswith(GENERATIVE_PREFIX)]
            if len(generative) > 1:
                first = outcomes[generative[0]]
                out["versus_first_generative"] = {
                    "baseline": generative[0],
                    "arms": {
                        name: {
                            fig: paired_lift(outcomes[name].per_request[m], first.per_request[m], users)
                            for fig, m in METRICS.items()
                        }
                        for name in generative[1:]
                    },
                }
            stages[stage][mode] = out
    return stages


def view_prefix(name: str, leading: bool) -> str:
    """How a view's comparisons are named: the leading view's as ever, another's after ``name:``."""
    return "" if leading else f"{name}:"


def comparison_family(args: ArenaArguments) -> list[str]:
    """The comparisons an arena run makes, named from its configuration before anything is played:
    ``stage/mode/arm/figure`` for every treatment arm against control, and ``stage/mode/arm vs first/figure``
    for every later generative arm against the first, in every control view (another view's names start
    with ``view:``). Their stars are corrected together (Holm)."""
    names = []
    for i, view in enumerate(args.views()):
        prefix = view_prefix(view.name, i == 0)
        for stage in args.ranking_stages:
            for mode in args.budget_modes:
                arms = [a.name for a in view.arms(mode)[1:]]
                names += [f"{prefix}{stage}/{mode}/{arm}/{fig}" for arm in arms for fig in METRICS]
                generative = [a for a in arms if a.startswith("+" + GENERATIVE_PREFIX)]
                names += [f"{prefix}{stage}/{mode}/{arm} vs {generative[0]}/{fig}"
                          for arm in generative[1:] for fig in METRICS]  # fmt: skip
    return names


def correct_for_multiplicity(results: dict, family: list[str]) -> dict:
    """Holm's correction over :func:`comparison_family` (every view's comparisons): marks each lift
    ``significant`` (family-wise error 5 %) in place and returns the ``comparisons`` record (method,
    alpha, the family in order, the significant names)."""
    views = [("", results["stages"])]
    views += [(view_prefix(view["name"], False), view["stages"]) for view in results.get("control_views", [])]
    lifts = {}
    for prefix, stages in views:
        for stage, modes in stages.items():
            for mode, out in modes.items():
                at = f"{prefix}{stage}/{mode}"
                for arm, res in out["arms"].items():
                    lifts |= {f"{at}/{arm}/{fig}": lift for fig, lift in res["lifts"].items()}
                if versus := out.get("versus_first_generative"):
                    for arm, figs in versus["arms"].items():
                        lifts |= {f"{at}/{arm} vs {versus['baseline']}/{f}": v for f, v in figs.items()}
    if set(lifts) != set(family):
        raise RuntimeError(
            f"the comparisons played differ from those named in advance: {sorted(set(lifts) ^ set(family))}"
        )
    significant = holm({name: lifts[name]["p"] for name in family}, ALPHA)
    for name, lift in lifts.items():
        lift["significant"] = significant[name]
    return {
        "method": "holm",
        "alpha": ALPHA,
        "family": family,
        "num_significant": sum(significant.values()),
        "significant": [name for name in family if significant[name]],
    }
