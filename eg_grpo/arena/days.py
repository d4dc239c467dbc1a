"""A live catalogue day by day: a generative channel whose SIDs are refreshed once a day, played per day.

The arena's new-item figures (:mod:`eg_grpo.arena.live`) describe a whole run against one SID version.
A live system refreshes as items launch: here a generative channel serves, for each request, the SID
version of the request's day (:class:`DailyChannel`, one :meth:`RecallChannel.refresh
<eg_grpo.eval.recall.RecallChannel.refresh>` per day; each day's version is an ``add_items`` child of the
previous day's holding the items launched by the day's end, built by ``benchmarks/live_days.py``). An
item launched later in the day is in the day's version but never offered before its launch
(:class:`~eg_grpo.arena.live.OnSaleChannel`).

:func:`play_by_day` recalls every request once (:func:`~eg_grpo.arena.run.recall_all`), then plays the whole
run and each day's slice of the same lists through the arena's funnel (:func:`~eg_grpo.arena.run.play_arena`).
A day's figures are those a run of that day alone gives, and the days add up to the whole run exactly: a
share is a ratio of sums, so the whole run's is the days' new-item amounts over their totals (:func:`aggregate`).
Days are whole days of the requests' ``timestamp`` (seconds since the log's start).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eg_grpo.arena.channels import Channel, RequestBatch
from eg_grpo.arena.config import ArenaArguments
from eg_grpo.arena.live import COUNTED, OnSaleChannel, on_sale_channels
from eg_grpo.arena.oracle import Oracle
from eg_grpo.arena.run import play_arena, recall_all, split_rows

DAY = 86_400  # seconds: day d is [d * DAY, (d + 1) * DAY) of the requests' timestamps
AGES = ("new", "old")


def day_of(timestamps) -> np.ndarray:
    """``(R,)`` the day of each timestamp (whole days since time 0, the log's start)."""
    return np.asarray(timestamps, dtype=np.int64) // DAY


def day_slices(rows: np.ndarray, timestamps: np.ndarray) -> dict[int, np.ndarray]:
    """Day -> the positions in ``rows`` of that day's requests, days ascending (``timestamps``: ``(R,)`` per
    request row of the log). Every position is in exactly one day."""
    days = day_of(np.asarray(timestamps)[np.asarray(rows)])
    return {int(d): np.flatnonzero(days == d) for d in np.unique(days)}


class DailyChannel(Channel):
    """A generative channel serving, for each request, the SID version of the request's day.

    ``inner`` is a :class:`~eg_grpo.arena.channels.GenerativeChannel` built on the first version (the SIDs
    its model was trained with); ``versions`` maps each day to its SID folder (a day without launches: the
    previous day's folder); ``timestamps`` are ``(R,)`` per request row of the log. The running channel is
    refreshed when a request's day needs another version, so the model is loaded once and the served SIDs
    only grow: requests must come in time order (the arena's rows do), an earlier day is refused.
    """

    def __init__(self, inner: Channel, versions: Mapping[int, str | Path], timestamps: np.ndarray):
        self.inner, self.name = inner, inner.name
        self.versions = {int(day): Path(folder) for day, folder in versions.items()}
        self.timestamps = np.asarray(timestamps)
        self.day: int | None = None  # the day whose version is served; None: the first version
        self.served: Path | None = None

    def serve(self, day: int) -> None:
        """Serves ``day``'s version from now on (a refresh only when its folder differs from the served one).

        Raises:
            ValueError: no version for ``day``, or a day before the one served.
        """
        if day not in self.versions:
            raise ValueError(
                f"channel {self.name!r} has no SID version for day {day} (days {sorted(self.versions)})"
            )
        if self.day is not None and day < self.day:
            raise ValueError(
                f"channel {self.name!r} serves day {self.day}: day {day} comes too late (a refresh only adds "
                "items, so requests must come in time order)"
            )
        if self.versions[day] != self.served:
            self.inner.inner.refresh(self.versions[day])
            self.served = self.versions[day]
        self.day = day

    def recall(self, batch, quota):
        days = day_of(self.timestamps[np.asarray(batch.rows)])
        cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), len(days)]
        out = []
        for start, stop in zip(cuts[:-1], cuts[1:]):  # a run of one day's requests
            self.serve(int(days[start]))
            out.extend(self.inner.recall(batch.slice(start, stop), quota))
        return out


def daily_channel(channel: Channel, versions: Mapping[int, str | Path], oracle: Oracle) -> Channel:
    """``channel`` (a generative channel as :func:`~eg_grpo.arena.run.build_channels` returns it) refreshed
    per day: a :class:`DailyChannel` inside the on-sale filter when the data has launches."""
    inner = channel.inner if isinstance(channel, OnSaleChannel) else channel
    daily = DailyChannel(inner, versions, oracle.timestamp)
    return on_sale_channels({daily.name: daily}, oracle)[daily.name]


def play_by_day(args: ArenaArguments, oracle: Oracle, channels: Mapping[str, Channel], ranker=None) -> dict:
    """The whole run and each day of it, from one recall of :func:`split_rows`'s requests.

    Returns:
        ``{"whole": results, "days": [{"day", "requests", "results"}, ...]}``, each ``results`` the
        ``arena_results.json`` dict of :func:`play_arena` (the whole run's, then each day's slice).

    Raises:
        ValueError: a day with fewer than 2 played requests (its paired figures are undefined), or requests
            not in time order.
    """
    rows = split_rows(args, oracle.log)
    if (np.diff(day_of(oracle.timestamp[rows])) < 0).any():  # a DailyChannel only moves forward in time
        raise ValueError(
            "the played requests are not in time order: sort requests.parquet by timestamp (a daily refresh "
            "only adds items, so the days must come one after the other)"
        )
    slices = day_slices(rows, oracle.timestamp)
    if thin := {day: len(at) for day, at in slices.items() if len(at) < 2}:
        raise ValueError(f"day(s) {thin} have fewer than 2 requests: play more (max_requests 0 plays all)")
    batch = RequestBatch.from_log(oracle.log, rows)
    items, latency = recall_all(channels, args.recall_quotas(), batch, oracle, args.batch_size)
    whole = play_arena(args, oracle, channels, ranker, rows, (items, latency))
    days = []
    for day, at in slices.items():
        part = (
            {n: [lists[i] for i in at] for n, lists in items.items()},
            {n: ms[at] for n, ms in latency.items()},
        )
        days.append({"day": day, "requests": len(at),
                     "results": play_arena(args, oracle, channels, ranker, rows[at], part)})  # fmt: skip
    return {"whole": whole, "days": days}


def new_item_figures(results: dict) -> dict:
    """``stage -> mode -> arm -> figures`` of a run's leading view, ``control`` first: the new-item ``share``
    of the arm's exposures, clicks and purchases (``share_se``: its standard error, clustered by user), and
    the expected ``per_request`` amounts on new and old items behind it. Empty without launches."""
    out = {}
    for stage, modes in results["stages"].items():
        for mode, played in modes.items():
            arms = {arm: r["new_items"] for arm, r in played["arms"].items() if "new_items" in r}
            if not arms:
                continue
            sides = {"control": (next(iter(arms.values())), "control")}
            sides |= {arm: (fig, "treatment") for arm, fig in arms.items()}
            out.setdefault(stage, {})[mode] = {
                arm: {
                    "share": {w: fig["share"][w][side] for w in COUNTED},
                    "share_se": {w: fig["share"][w][f"{side}_se"] for w in COUNTED},
                    "per_request": {
                        age: {w: fig["per_request"][age][w][side] for w in COUNTED} for age in AGES
                    },
                }
                for arm, (fig, side) in sides.items()
            }
    return out


def aggregate(days: list[dict]) -> dict:
    """``stage -> mode -> arm -> share`` over all the days of :func:`summarise`: the days' expected new-item
    amounts over their totals (per-request means times requests), i.e. the whole run's ratio of sums."""
    out = {}
    first = days[0]["figures"]
    for stage, modes in first.items():
        for mode, arms in modes.items():
            out.setdefault(stage, {})[mode] = {}
            for arm in arms:
                per_day = [(d["requests"], d["figures"][stage][mode][arm]["per_request"]) for d in days]
                new = {w: sum(n * p["new"][w] for n, p in per_day) for w in COUNTED}
                total = {w: new[w] + sum(n * p["old"][w] for n, p in per_day) for w in COUNTED}
                out[stage][mode][arm] = {
                    w: new[w] / total[w] if total[w] > 0 else float("nan") for w in COUNTED
                }
    return out


def summarise(played: dict) -> dict:
    """The JSON record of :func:`play_by_day`: the cut-off, per day its requests, each arm's new-item figures
    (:func:`new_item_figures`) and each channel's share of new items among its recalls, the days'
    :func:`aggregate` and the whole run's figures (the two agree)."""
    whole = played["whole"]
    record = whole.get("new_items") or {}
    days = [
        {
            "day": d["day"],
            "requests": d["requests"],
            "figures": new_item_figures(d["results"]),
            "recalled_new_share": {
                name: c["new_item_share"]
                for name, c in (d["results"].get("new_items") or {}).get("channels", {}).items()
            },
        }
        for d in played["days"]
    ]
    return {
        "simulated": True,
        "data_dir": whole["data_dir"],
        "split": whole["split"],
        "num_requests": whole["num_requests"],
        "cutoff": record.get("cutoff"),
        "cutoff_from": record.get("cutoff_from"),
        "days": days,
        "aggregated": aggregate(days) if days and days[0]["figures"] else {},
        "whole": new_item_figures(whole),
    }


def plot_days(summary: dict, path: str | Path, what: str = "purchases") -> None:
    """The new-item share of ``what`` per day, one line per arm (control dashed), in a panel per ranking stage x
    budget mode.

    Raises:
        ValueError: the summary has no new-item figures (data without launches).
    """
    from eg_grpo.arena.report import _grid

    days = summary["days"]
    if not days or not days[0]["figures"]:
        raise ValueError(
            "no new-item figures to plot: the data has no launch_time (see docs/live_catalogue.md)"
        )
    stages = {stage: {mode: None for mode in modes} for stage, modes in days[0]["figures"].items()}
    plt, fig, panels = _grid(stages)
    x = [d["day"] for d in days]
    for ax, stage, mode, _ in panels:
        for arm in days[0]["figures"][stage][mode]:
            y = [100 * d["figures"][stage][mode][arm]["share"][what] for d in days]
            ax.plot(
                x, y, marker="o", label=arm, **({"ls": "--", "color": "black"} if arm == "control" else {})
            )
        ax.set_xticks(x, [f"{d['day']}\n({d['requests']} req.)" for d in days], fontsize=7)
        ax.set_xlabel("day of the log (requests played)")
        ax.set_ylabel(f"new items' share of {what}, % (simulated)")
        ax.set_title(f"{stage} ranker, {mode}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Items launched after the cut-off ({summary['cutoff']}), day by day (SIMULATED)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
