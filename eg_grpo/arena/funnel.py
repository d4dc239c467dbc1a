"""The funnel of one arm: channel quotas -> merged candidates with attribution -> ranking stage ->
top N exposed -> expected clicks, purchases and GMV from the oracle.

Everything is in expectation (no sampled clicks), and the ranking stage's noise is drawn from a
hash of (seed, request, item), so two arms that bring the same candidates for a request expose
the same list and score the same figures to the last bit: arms differ only by their candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eg_grpo.arena.oracle import Oracle
from eg_grpo.eval.slices import splitmix64

PER_REQUEST_METRICS = ("clicks", "purchases", "gmv", "relevance", "grade3_share", "exposures")
COUNTED = ("exposures", "clicks", "purchases")


@dataclass
class Candidates:
    """Merged candidates of a batch of ``B`` requests; all arrays ``(M,)``.

    ``sources`` is a bit mask of the channels that brought the item (bit ``i`` = channel ``i`` of
    the merge order); ``arrival`` is the rank of the item's first arrival (channel order, then the
    channel's rank), the ranking stage's tie-break.
    """

    slot: np.ndarray  # request position in the batch
    item: np.ndarray  # item row
    sources: np.ndarray  # uint64 bit mask
    arrival: np.ndarray


def merge(
    recalled: Mapping[str, Sequence[np.ndarray]],
    quotas: Mapping[str, int],
    bits: Mapping[str, int],
    budget: np.ndarray | None = None,
) -> Candidates:
    """Takes each channel's first ``quota`` items per request and merges them.

    Args:
        recalled: channel -> per request an array of item rows, best first.
        quotas: channel -> how many of its items the arm takes.
        bits: channel -> its bit in ``Candidates.sources``.
        budget: ``(B,)`` exact number of distinct candidates per request (the ``fixed_budget`` arms: the
            control's own count), or None to take every channel's quota as it comes (``supplement``).
            With a budget, every channel's quota is scaled by one common factor per request until the
            merged list holds ``budget[b]`` items: the item at rank ``r`` (from 0) of a channel with
            quota ``q`` is taken in the order of ``(r + 1) / q`` (ties: channel order, then rank), so
            each channel keeps its share of the list and none is cut first. A channel's whole recalled
            list is eligible, so a request whose channels under-deliver their quotas is topped up from
            the channels that have more; it falls short only if all of them run out.

    Returns:
        [`Candidates`], deduplicated per request; an item brought by several channels keeps all
        their bits and its first arrival.
    """
    slots, items, masks, arrivals, fills = [], [], [], [], []
    offset = 0
    for name, quota in quotas.items():
        take = None if budget is not None else quota
        lists = [np.asarray(found[:take], dtype=np.int64) for found in recalled[name]]
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        slots.append(np.repeat(np.arange(len(lists)), lengths))
        items.append(np.concatenate(lists) if lists else np.empty(0, np.int64))
        masks.append(np.full(int(lengths.sum()), np.uint64(1) << np.uint64(bits[name]), dtype=np.uint64))
        # within a request: channel order first, then the channel's own rank
        rank = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        arrivals.append(offset + rank)
        fills.append((rank + 1) / quota)
        offset += max(int(lengths.max(initial=0)), 1)
    slot, item = np.concatenate(slots), np.concatenate(items)
    mask, arrival = np.concatenate(masks), np.concatenate(arrivals)
    if budget is not None:
        slot, item, mask, arrival = _within_budget(slot, item, mask, arrival, np.concatenate(fills), budget)
    order = np.lexsort((arrival, item, slot))
    slot, item, mask, arrival = slot[order], item[order], mask[order], arrival[order]
    first = np.ones(len(slot), dtype=bool)
    first[1:] = (slot[1:] != slot[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(first)
    sources = np.bitwise_or.reduceat(mask, starts) if len(starts) else mask[:0]
    return Candidates(slot=slot[starts], item=item[starts], sources=sources, arrival=arrival[starts])


def _within_budget(slot, item, mask, arrival, fill, budget):
    """The (channel, rank) entries a common quota scale keeps: per request, in the order of ``fill``
    (then arrival), every entry up to and including the one that brings the ``budget``-th distinct item.

    A later entry that repeats a kept item is dropped too: the channel's scaled quota did not reach it,
    so it adds no source bit.
    """
    order = np.lexsort((arrival, fill, slot))
    slot, item, mask, arrival = slot[order], item[order], mask[order], arrival[order]
    # new: the entry's item has not appeared earlier in its request's order
    seen = np.lexsort((np.arange(len(slot)), item, slot))
    new = np.ones(len(slot), dtype=bool)
    new[seen[1:]] = (slot[seen][1:] != slot[seen][:-1]) | (item[seen][1:] != item[seen][:-1])
    new_before = np.cumsum(new) - new  # distinct items before the entry, over the whole batch
    starts = np.searchsorted(slot, np.arange(len(budget)))
    at_start = np.concatenate([new_before, [int(new.sum())]])[starts]  # ... before each request's first entry
    keep = new_before - at_start[slot] < np.asarray(budget)[slot]
    return slot[keep], item[keep], mask[keep], arrival[keep]


def pair_normal(seed: int, request_ids, item_ids) -> np.ndarray:
    """A standard normal draw per (request, item) pair, a pure function of ``(seed, request, item)``
    (splitmix64 hashes + Box-Muller): the common random numbers of the ranking stage."""
    r = np.asarray(request_ids).astype(np.uint64)
    i = np.asarray(item_ids).astype(np.uint64)
    h = splitmix64(splitmix64(splitmix64(np.uint64(seed) + r)) ^ i)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = ((splitmix64(h) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# A ranking stage scores aligned (request rows, item rows) -> (M,) scores, higher first.
RankingStage = Callable[[np.ndarray, np.ndarray], np.ndarray]


def legacy_ranking_stage(oracle: Oracle, seed: int = 0) -> RankingStage:
    """The simulator's legacy ranker, its noise common to all arms per (request, item)."""
    request_ids = oracle.log.requests["request_id"].to_numpy()
    item_ids = oracle.log.items["item_id"].to_numpy()

    def score(req_rows, item_rows):
        noise = pair_normal(seed, request_ids[req_rows], item_ids[item_rows])
        return oracle.legacy_score(req_rows, item_rows, noise)

    return score


def learned_ranking_stage(ranker, oracle: Oracle, head: str = "click") -> RankingStage:
    """The learned ranking simulator (``reward_models.ranker.RankingSimulator``), by one head."""
    request_ids = oracle.log.requests["request_id"].to_numpy()
    item_ids = oracle.log.items["item_id"].to_numpy()

    def score(req_rows, item_rows):
        return ranker.score(request_ids[req_rows], item_ids[item_rows])[head]

    return score


@dataclass
class ArmOutcome:
    """What one arm did on a batch of ``B`` requests.

    ``per_request`` maps each of :data:`PER_REQUEST_METRICS` to ``(B,)`` expected values (relevance
    and grade-3 share are means over the exposed items, 0 when nothing is exposed).
    ``by_channel[channel][way][what]`` sums ``what`` (exposures, clicks, purchases) over the exposed
    items the channel brought ``only`` (no other channel did) or at ``any`` rate.
    """

    per_request: dict[str, np.ndarray]
    by_channel: dict[str, dict[str, dict[str, float]]]
    # the exposed items, all (E,): slot, item row, position, sources (bit mask) and P(examine) at the position
    exposed: dict[str, np.ndarray] | None = None


def play(
    candidates: Candidates,
    request_rows: np.ndarray,
    n_exposed: np.ndarray,
    oracle: Oracle,
    ranking: RankingStage,
    bits: Mapping[str, int],
) -> ArmOutcome:
    """Ranks the merged candidates, exposes the top ``n_exposed[b]`` of request ``b`` at positions
    0, 1, ... and scores the exposed lists with the oracle.

    Args:
        candidates: from [`merge`].
        request_rows: ``(B,)`` rows of the batch's requests in ``log.requests``.
        n_exposed: ``(B,)`` items shown per request (the log's impression count of the request).
        oracle: the user model.
        ranking: the ranking stage.
        bits: channel -> bit, as given to [`merge`].
    """
    n_req = len(request_rows)
    req = request_rows[candidates.slot]
    score = ranking(req, candidates.item) if len(req) else np.empty(0)
    order = np.lexsort((candidates.arrival, -score, candidates.slot))
    slot = candidates.slot[order]
    group_start = np.searchsorted(slot, np.arange(n_req))
    position = np.arange(len(slot)) - group_start[slot]
    keep = position < n_exposed[slot]
    shown, position = order[keep], position[keep]
    slot = candidates.slot[shown]
    item, sources = candidates.item[shown], candidates.sources[shown]
    probs = oracle.probabilities(request_rows[slot], item, position)
    clicks = probs.click
    purchases = clicks * probs.purchase_given_click
    rel = oracle.relevance(request_rows[slot], item).astype(float)

    def per_request(weights):
        return np.bincount(slot, weights=weights, minlength=n_req)

    exposures = per_request(np.ones(len(slot)))
    shown_any = np.maximum(exposures, 1.0)
    outcome = {
        "clicks": per_request(clicks),
        "purchases": per_request(purchases),
        "gmv": per_request(purchases * oracle.price[item]),
        "relevance": per_request(rel) / shown_any,
        "grade3_share": per_request((rel == 3).astype(float)) / shown_any,
        "exposures": exposures,
    }
    counted = {"exposures": np.ones(len(slot)), "clicks": clicks, "purchases": purchases}
    by_channel = {}
    for name, bit in bits.items():
        flag = np.uint64(1) << np.uint64(bit)
        ways = {"only": sources == flag, "any": (sources & flag) != 0}
        by_channel[name] = {
            way: {what: float(values[mask].sum()) for what, values in counted.items()}
            for way, mask in ways.items()
        }
    exposed = {"slot": slot, "item": item, "position": position, "sources": sources, "examine": probs.examine}
    return ArmOutcome(per_request=outcome, by_channel=by_channel, exposed=exposed)
