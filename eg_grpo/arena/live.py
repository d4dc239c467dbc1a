"""A live catalogue in the arena: what each arm does with items launched after its models were trained.

On data with ``items.launch_time`` (``launch_share > 0``) an item is *new* when it launched at or after
the cut-off (:func:`resolve_cutoff`: ``launch_cutoff``, else the cut-off of a generative model's
training data, else the played split's first request), *old* otherwise. Per arm the arena then reports

- the share of its exposures, clicks and purchases that go to new items, with the paired difference to
  control (a ratio of sums per arm; its standard error by the delta method, clustered by user as
  :mod:`eg_grpo.arena.stats` does);
- the expected new-item and old-item clicks and purchases per request, as paired lifts over control;
- the recall of logged clicks on new items (of the test requests' clicked new items, the share the
  arm's merged candidates hold) and on old items, with paired differences.

No channel offers an item before its launch: :class:`OnSaleChannel` filters the classical and generative
channels (they index the whole catalogue, so each request sees the catalogue as of its time), and the
``logged`` and ``oracle`` channels draw from what was on sale (:mod:`eg_grpo.arena.oracle`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eg_grpo.arena.channels import Channel
from eg_grpo.arena.report import control_title, result_views
from eg_grpo.arena.stats import Z95, clustered_se, paired_lift
from eg_grpo.data.cutoff import launch_times
from eg_grpo.io import folder_fingerprint, read_stage

COUNTED = ("exposures", "clicks", "purchases")
# channels that pick what was on sale themselves: wrapping them would change their draws
SELF_FILTERED = ("logged", "oracle")


def training_cutoff(model_dir: str | Path) -> int | None:
    """The cut-off of the data a model was trained on (a ``data_cutoff`` folder's ``cutoff_time``), or None."""
    inputs = (read_stage(model_dir) or {}).get("inputs") or {}
    for entry in inputs.values():
        path = entry.get("path") if isinstance(entry, dict) else None
        if path and Path(path).is_dir() and (t := (read_stage(path) or {}).get("cutoff_time")) is not None:
            return int(t)
    return None


def resolve_cutoff(args, log) -> tuple[int | None, str]:
    """``(cut-off, where it came from)``; ``(None, why)`` when the data has no launches.

    ``args.launch_cutoff`` wins; else the first generative model trained on a ``data_cutoff`` folder
    names it; else the played split's first request (splits are by time, so a model trained on the
    earlier splits has seen nothing launched after it).
    """
    times = launch_times(log.items)
    if not np.isfinite(times).any():
        return None, "no launch_time in the data"
    if args.launch_cutoff is not None:
        return int(args.launch_cutoff), "launch_cutoff"
    for name, (model_dir, _) in args.generative_models().items():
        if (cutoff := training_cutoff(model_dir)) is not None:
            return cutoff, f"training data of {name}"
    stamps = log.requests.loc[log.requests["split"] == args.split, "timestamp"]
    return int(stamps.min()), f"first {args.split} request"


def lineage_data_dir(data_dir: str | Path, sid_dir: str | Path) -> str | Path:
    """The data folder to check ``sid_dir``'s lineage against: the ``data_cutoff`` folder it was built
    from when that folder is a cut-off of ``data_dir`` (a model trained before the launches, played on
    the full log), else ``data_dir`` itself."""
    sids = read_stage(sid_dir) or {}
    built = ((sids.get("inputs") or {}).get("data") or {}).get("path") or (
        (sids.get("lineage") or {}).get("data") or {}
    ).get("path")
    record = read_stage(built) if built and Path(built).is_dir() else None
    if record and record.get("stage") == "data_cutoff":
        source = ((record.get("inputs") or {}).get("source") or {}).get("fingerprint")
        if source == folder_fingerprint(data_dir):
            return built
    return data_dir


class OnSaleChannel(Channel):
    """A channel whose items launched by the request's time: asks the inner channel for the quota plus
    every item that may not have launched yet in this batch, then drops the unlaunched ones, so the
    request still gets its quota when the channel has it."""

    def __init__(self, inner: Channel, oracle):
        self.inner, self.oracle, self.name = inner, oracle, inner.name
        self.launch = oracle.launches.time

    def recall(self, batch, quota):
        earliest = self.oracle.timestamp[np.asarray(batch.rows)].min()
        pending = int((self.launch >= earliest).sum())  # at most this many of a list can be dropped
        out = []
        for row, items in zip(batch.rows, self.inner.recall(batch, quota + pending)):
            items = np.asarray(items, dtype=np.int64)
            if len(items):
                items = items[self.oracle.on_sale(np.full(len(items), row), self.oracle.item_rows(items))]
            out.append(items[:quota])
        return out


def on_sale_channels(channels: Mapping[str, Channel], oracle) -> dict[str, Channel]:
    """``channels`` with every channel but ``logged`` and ``oracle`` wrapped in :class:`OnSaleChannel`
    when the data has launches (unchanged otherwise)."""
    if oracle.launches is None:
        return dict(channels)
    return {n: c if n in SELF_FILTERED else OnSaleChannel(c, oracle) for n, c in channels.items()}


def ratio_diff(num_t, den_t, num_c, den_c, clusters=None) -> dict:
    """Two ratios of sums over the same requests (``sum(num) / sum(den)``, treatment and control) and their
    paired difference; standard errors by the delta method, :func:`clustered_se` of the linearised
    residuals ``(num - R den) / mean(den)``. A ratio with a zero denominator is NaN."""
    out, residuals = {}, []
    for side, num, den in (("treatment", num_t, den_t), ("control", num_c, den_c)):
        num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        if den.sum() <= 0:
            out[side], out[f"{side}_se"] = float("nan"), float("nan")
            residuals.append(np.full(len(den), np.nan))
            continue
        ratio = num.sum() / den.sum()
        residuals.append((num - ratio * den) / den.mean())
        out[side], out[f"{side}_se"] = float(ratio), clustered_se(residuals[-1], clusters)
    diff = out["treatment"] - out["control"]
    se = clustered_se(residuals[0] - residuals[1], clusters)
    return {**out, "diff": diff, "diff_se": se, "diff_ci95": [diff - Z95 * se, diff + Z95 * se]}


@dataclass
class NewItemFigures:
    """The new-item figures of the arms played on ``rows`` (``users``: the clusters of the errors).

    ``click_slot`` / ``click_item`` / ``click_new``: the logged clicks of the played requests (request
    position, item row, whether the item is new).
    """

    oracle: object
    cutoff: int
    source: str
    is_new: np.ndarray  # (N,) per item row
    rows: np.ndarray
    users: np.ndarray
    click_slot: np.ndarray
    click_item: np.ndarray
    click_new: np.ndarray

    @classmethod
    def build(cls, args, oracle, rows: np.ndarray, users: np.ndarray) -> NewItemFigures | None:
        """The figures of a run, or None when the data has no launches."""
        cutoff, source = resolve_cutoff(args, oracle.log)
        if cutoff is None:
            return None
        log = oracle.log
        is_new = launch_times(log.items) >= cutoff
        imps = log.impressions[log.impressions["clicked"].to_numpy(bool)]
        slot_of = dict(zip(log.requests["request_id"].to_numpy()[rows].tolist(), range(len(rows))))
        imps = imps[imps["request_id"].isin(list(slot_of))]
        slot = imps["request_id"].map(slot_of).to_numpy(dtype=np.int64)
        item = oracle.item_rows(imps["item_id"].to_numpy())
        return cls(oracle, cutoff, source, is_new, np.asarray(rows), users, slot, item, is_new[item])

    def _hits(self, slot: np.ndarray, item: np.ndarray) -> dict[str, np.ndarray]:
        """Per request, the logged new-item and old-item clicks whose item is among ``(slot, item)`` pairs."""
        n_items, n_req = len(self.is_new), len(self.rows)
        found = np.isin(self.click_slot * n_items + self.click_item, slot.astype(np.int64) * n_items + item)
        return {
            age: np.bincount(self.click_slot, weights=(found & mask).astype(float), minlength=n_req)
            for age, mask in (("new", self.click_new), ("old", ~self.click_new))
        }

    def clicks_per_request(self) -> dict[str, np.ndarray]:
        """Per request, the logged clicks on new and on old items (the recalls' denominators)."""
        n_req = len(self.rows)
        return {
            age: np.bincount(self.click_slot, weights=mask.astype(float), minlength=n_req)
            for age, mask in (("new", self.click_new), ("old", ~self.click_new))
        }

    def side(self, outcome, candidates) -> dict:
        """Per-request arrays of one arm: ``counts[age][what]`` (expected exposures, clicks, purchases on
        new / old items) and ``hits[age]`` (logged clicks its candidates recall)."""
        exposed, n_req = outcome.exposed, len(self.rows)
        slot, item = exposed["slot"], exposed["item"]
        probs = self.oracle.probabilities(self.rows[slot], item, exposed["position"])
        weights = {"exposures": np.ones(len(slot)), "clicks": probs.click,
                   "purchases": probs.click * probs.purchase_given_click}  # fmt: skip
        new = self.is_new[item]
        counts = {
            age: {w: np.bincount(slot, weights=v * mask, minlength=n_req) for w, v in weights.items()}
            for age, mask in (("new", new), ("old", ~new))
        }
        return {"counts": counts, "hits": self._hits(candidates.slot, candidates.item)}

    def compare(self, arm: dict, control: dict) -> dict:
        """The ``new_items`` entry of an arm: shares, per-request amounts and recalls against control."""
        tn, cn = arm["counts"]["new"], control["counts"]["new"]
        to, co = arm["counts"]["old"], control["counts"]["old"]
        clicks = self.clicks_per_request()
        return {
            "share": {w: ratio_diff(tn[w], tn[w] + to[w], cn[w], cn[w] + co[w], self.users) for w in COUNTED},
            "per_request": {
                age: {
                    w: paired_lift(arm["counts"][age][w], control["counts"][age][w], self.users)
                    for w in COUNTED
                }
                for age in ("new", "old")
            },
            "recall_of_clicks": {
                age: ratio_diff(arm["hits"][age], clicks[age], control["hits"][age], clicks[age], self.users)
                for age in ("new", "old")
            },
        }

    def summary(self, recalled: Mapping[str, list[np.ndarray]]) -> dict:
        """The run's ``new_items`` record: the cut-off, the counts, and each channel's recall of the logged
        new-item and old-item clicks (``recalled``: channel -> per request its item rows)."""
        clicks = self.clicks_per_request()
        channels = {}
        for name, lists in recalled.items():
            lengths = np.array([len(x) for x in lists], dtype=np.int64)
            slot = np.repeat(np.arange(len(lists)), lengths)
            items = np.concatenate(lists).astype(np.int64) if len(lists) else np.empty(0, np.int64)
            hits = self._hits(slot, items)
            channels[name] = {
                age: (float(hits[age].sum() / clicks[age].sum()) if clicks[age].sum() > 0 else None)
                for age in ("new", "old")
            }
            channels[name]["new_item_share"] = float(self.is_new[items].mean()) if len(items) else 0.0
        return {
            "cutoff": self.cutoff,
            "cutoff_from": self.source,
            "new_items": int(self.is_new.sum()),
            "logged_clicks": {age: int(v.sum()) for age, v in clicks.items()},
            "requests_with_new_clicks": int((clicks["new"] > 0).sum()),
            "channels": channels,
        }


def _share_cell(fig: dict) -> str:
    """``12.3 (+4.5 ± 0.6)``: the arm's ratio in %, its difference to control in points ± 1.96 SE."""
    if not np.isfinite(fig["treatment"]):
        return "n/a"
    if not np.isfinite(fig["diff"]):
        return f"{100 * fig['treatment']:.1f}"
    return f"{100 * fig['treatment']:.1f} ({100 * fig['diff']:+.1f} ± {100 * Z95 * fig['diff_se']:.1f})"


def _new_item_table(out: dict, title: str) -> list[str]:
    """The new-item table of one ranking stage and budget mode (lines); empty when its arms have none."""
    arms = {a: r["new_items"] for a, r in out["arms"].items() if "new_items" in r}
    if not arms:
        return []
    first = next(iter(arms.values()))
    control = [f"{100 * first['share'][w]['control']:.1f}" for w in COUNTED] + [
        "n/a" if not np.isfinite(v := first["recall_of_clicks"][age]["control"]) else f"{100 * v:.1f}"
        for age in ("new", "old")
    ]
    lines = [
        title,
        "",
        "| arm | new exp % | new clk % | new pur % | recall new clicks % | recall old clicks % |",
        "|---|---:|---:|---:|---:|---:|",
        "| control | " + " | ".join(control) + " |",
    ]
    for arm, fig in arms.items():
        cells = [_share_cell(fig["share"][w]) for w in COUNTED]
        cells += [_share_cell(fig["recall_of_clicks"][age]) for age in ("new", "old")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + [""]


def render_new_items(results: dict) -> list[str]:
    """The new-item section of ``arena.md`` (lines); empty when the run has no ``new_items`` record."""
    record = results.get("new_items")
    if not record:
        return []
    logged = record["logged_clicks"]
    lines = [
        f"**New items** (launched at or after {record['cutoff']}, {record['cutoff_from']}: {record['new_items']} "
        f"items; logged clicks of the played requests: {logged['new']} on new items (in "
        f"{record['requests_with_new_clicks']} requests), {logged['old']} on old ones). Per arm: the share of its "
        "exposures / clicks / purchases on new items, and the recall of the logged clicks on new and on old items "
        "(the share its candidates hold), in %, with the difference to control in points ± 1.96 paired standard "
        "errors (clustered by user; descriptive, outside the corrected family). No channel offers an item before "
        "its launch; `item_cf` cannot recall new items (it knows only train-split co-clicks), nor can a "
        "generative channel whose SID folder predates them (refresh it with `add_items`).",
        "",
    ]
    views = result_views(results)
    for view in views:
        over = "" if len(views) == 1 else f"Over {control_title(view)}, ranking"
        for stage, modes in view["stages"].items():
            for mode, out in modes.items():
                lines += _new_item_table(out, f"{over or 'Ranking'} stage `{stage}`, budget `{mode}`:")
    lines += [
        "| channel | recall of new-item clicks | recall of old-item clicks | new items among its recalls % |",
        "|---|---:|---:|---:|",
    ]
    for name, ch in record["channels"].items():
        cells = ["n/a" if ch[age] is None else f"{ch[age]:.3f}" for age in ("new", "old")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * ch['new_item_share']:.1f} |")
    return lines + [""]
