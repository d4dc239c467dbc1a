"""The arena's arguments and the arms they describe.

Channels and quotas are written ``name:quota`` (``logged:48``); generative models ``name=model_dir``
(``sft=outputs/demo/sft``); further controls ``name=channel:quota+channel:quota``
(``legacy=logged:48``), so all fit in a YAML list and on the command line
(``--channels bm25:48 dense:48 --generative sft=outputs/demo/sft --control_views legacy=logged:48``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.data.schema import SPLITS
from eg_grpo.decoding.generate import check_beam_score

CLASSICAL_CHANNELS = ("logged", "bm25", "dense", "item_cf", "oracle")
RANKING_STAGES = ("legacy", "learned")
BUDGET_MODES = ("supplement", "fixed_budget")
GENERATIVE_PREFIX = "gen_"
ITEM_ORDERS = ("clicks", "prior")
VIEW_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class ArenaArguments:
    """Arguments of the search-funnel arena (``recipes/arena.py``).

    Args:
        data_dir: a simulated data folder (``recipes/make_data.py``; its ``stage.json`` records the
            simulator config the oracle rebuilds the users from).
        output_dir: where ``arena_results.json``, ``arena.md`` and the PNGs go (written atomically).
        sid_dir: the SID folder the generative models were trained with (``build_sids.py`` output),
            unless an entry of ``generative`` names its own.
        ranker_dir: the learned ranking simulator (``recipes/train_ranker.py``); needed by ``learned``.
        index_dir: where channel indexes are cached (``None``: ``OUTPUT_DIR`` + ``_index``).
        split: the requests the arms are played on: ``train``, ``rl``, ``valid`` or ``test``.
        max_requests: a random sample of this many requests of the split (seeded by ``seed``); 0 = all.
        control: the control system's channels, ``name:quota``: the leading control view.
        control_name: the leading control view's name (its title in the report).
        control_views: further control views played on the same requests, ``name=channel:quota+...``
            (``legacy=logged:48``); each channel is recalled once and serves every view.
        channels: the added classical channels, one treatment arm each, ``name:quota``; ``oracle`` is
            the ceiling (the truly best items of the request). A view's arms are the added channels
            (classical and generative) its control lacks; a channel has one quota in the whole run.
        generative: the added generative models, one arm each, ``name=model_dir`` (SIDs from
            ``sid_dir``) or ``name=model_dir,sid_dir`` (a model trained on other SIDs); any number.
        generative_quota: items each generative channel brings.
        beam: SIDs generated per request (each expanded into its items until the quota).
        ranking_stages: ``legacy`` (the simulator's own ranker) and/or ``learned`` (``ranker_dir``).
        budget_modes: ``supplement`` (the added channel brings its own quota) and/or
            ``fixed_budget`` (the added quota is taken pro rata, and each request gets exactly the control's
            count of candidates: :func:`eg_grpo.arena.funnel.merge` with a budget).
        dense_encoder: text encoder of the ``dense`` channel (the SID stage's ``encoder``).
        dense_description_chars: description characters in the item text (the SID stage's value).
        encoder_cache_dir: the encoders' vector cache (``None``: the SID stage's default), so the
            item vectors the SID stage encoded are reused.
        max_history: history items in the generative prompt (as in training).
        use_titles: whether the generative prompt carries titles (as in training).
        device: ``auto``, ``cpu`` or ``cuda`` for the generative models.
        batch_size: requests per channel call; latency per request = call time / batch size.
        seed: seed of the ranking noise (common to all arms per (request, item)), of ``logged`` and of the
            ``max_requests`` sample.
        launch_cutoff: on data with ``items.launch_time``, items launched at or after this time are *new*
            in the new-item figures (:mod:`eg_grpo.arena.live`); ``None``: the cut-off of a generative
            model's training data (a ``data_cutoff`` folder), else the split's first request.
        item_order: the order inside a generative channel's cluster: ``clicks`` (train-split clicks, an
            unclicked item last) or ``prior`` (an unclicked item at its cluster's mean score).
        beam_score: what ranks a generative channel's beams: ``model`` (the full model's log-prob) or
            ``constrained`` (the trie-renormalised policy's, what RL trains); see
            :func:`~eg_grpo.decoding.generate_sids`.
        per_request: also write ``per_request.parquet``: the leading view's per-request figures of its
            control and every arm (one row per request, ranking stage, budget mode and arm), for paired
            statistics across runs (e.g. averaging seeds in :mod:`eg_grpo.protocol`).
    """

    data_dir: str = field(default="outputs/tiny/data", metadata={"help": "Simulated data folder."})
    output_dir: str = field(default="outputs/tiny/arena", metadata={"help": "Output folder."})
    sid_dir: str | None = field(default=None, metadata={"help": "SID folder of the generative models."})
    ranker_dir: str | None = field(
        default=None, metadata={"help": "Learned ranker folder (train_ranker.py)."}
    )
    index_dir: str | None = field(
        default=None, metadata={"help": "Channel index cache (default OUTPUT_DIR_index)."}
    )
    split: str = field(default="test", metadata={"help": "Split the arms are played on."})
    max_requests: int = field(default=0, metadata={"help": "Random N requests of the split (0 = all)."})
    control: list[str] = field(
        default_factory=lambda: ["logged:48"], metadata={"help": "Control channels (the leading view)."}
    )
    control_name: str = field(default="main", metadata={"help": "Name of the leading control view."})
    control_views: list[str] = field(
        default_factory=list,
        metadata={"help": "Further control views on the same requests, name=channel:quota+channel:quota."},
    )
    channels: list[str] = field(
        default_factory=lambda: ["bm25:24", "dense:24", "item_cf:24", "oracle:24"],
        metadata={"help": "Added classical channels, name:quota."},
    )
    generative: list[str] = field(
        default_factory=list, metadata={"help": "Generative models, name=model_dir."}
    )
    generative_quota: int = field(default=24, metadata={"help": "Items per generative channel."})
    beam: int = field(default=20, metadata={"help": "SIDs per request for generative channels."})
    ranking_stages: list[str] = field(
        default_factory=lambda: ["legacy"], metadata={"help": "legacy and/or learned."}
    )
    budget_modes: list[str] = field(
        default_factory=lambda: list(BUDGET_MODES), metadata={"help": "supplement and/or fixed_budget."}
    )
    dense_encoder: str = field(default="default", metadata={"help": "Encoder of the dense channel."})
    dense_description_chars: int = field(default=0, metadata={"help": "Description chars in item texts."})
    encoder_cache_dir: str | None = field(default=None, metadata={"help": "Encoder vector cache."})
    max_history: int = field(default=10, metadata={"help": "History items in the generative prompt."})
    use_titles: bool = field(default=False, metadata={"help": "Titles in the generative prompt."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    batch_size: int = field(default=64, metadata={"help": "Requests per channel call."})
    seed: int = field(default=0, metadata={"help": "Seed of the ranking noise and the logged channel."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of other settings."})
    launch_cutoff: int | None = field(
        default=None, metadata={"help": "New items: launched at or after this time (default: see docs)."}
    )
    item_order: str = field(default="clicks", metadata={"help": "Cluster order of generative channels."})
    beam_score: str = field(
        default="model", metadata={"help": "Beam ranking of generative channels: model | constrained."}
    )
    per_request: bool = field(
        default=False, metadata={"help": "Also write per_request.parquet (the leading view, every arm)."}
    )

    def control_quotas(self) -> dict[str, int]:
        return parse_quotas(self.control, "control")

    def views(self) -> list[ControlView]:
        """The control views, the leading one (``control``, named ``control_name``) first, each with the
        channels its arms add: every added channel (classical, then generative) its control lacks."""
        if not VIEW_NAME.fullmatch(str(self.control_name)):
            raise ValueError(
                f"control_name {self.control_name!r} must be letters, digits, _ and -, e.g. classical"
            )
        controls = {self.control_name: self.control_quotas()}
        for spec in self.control_views:
            name, control = parse_view(spec)
            if name in controls:
                raise ValueError(f"control view {name!r} is named twice (control_name and control_views)")
            controls[name] = control
        added = self.added_quotas()
        return [
            ControlView(name, control, {n: q for n, q in added.items() if n not in control})
            for name, control in controls.items()
        ]

    def recall_quotas(self) -> dict[str, int]:
        """Every channel of every view with its quota: the leading control's, the added ones, then the
        other views' controls. Each is recalled once per request, at that quota, for every view."""
        views = self.views()
        quotas = {**views[0].control, **self.added_quotas()}
        for view in views[1:]:
            quotas |= {n: q for n, q in view.control.items() if n not in quotas}
        return quotas

    def added_quotas(self) -> dict[str, int]:
        """Every added channel (classical, then generative as ``gen_<name>``) with its quota."""
        quotas = parse_quotas(self.channels, "channels")
        for name in self.generative_models():
            quotas[GENERATIVE_PREFIX + name] = self.generative_quota
        return quotas

    def generative_models(self) -> dict[str, tuple[str, str | None]]:
        """name -> (model_dir, its sid_dir or None for ``sid_dir``), from ``name=model_dir[,sid_dir]``."""
        models = {}
        for spec in self.generative:
            name, sep, paths = str(spec).partition("=")
            model_dir, _, sid_dir = paths.partition(",")
            if not sep or not name or not model_dir:
                raise ValueError(
                    f"generative entry {spec!r} must be name=model_dir or name=model_dir,sid_dir, e.g. "
                    "sft=outputs/demo/sft or rqvae=outputs/demo/sft_rqvae,outputs/demo/sids_rqvae"
                )
            if name in models:
                raise ValueError(f"generative model name {name!r} appears twice")
            models[name] = (model_dir, sid_dir or None)
        return models

    def validate(self) -> None:
        """Raises ValueError naming the argument and the fix when the configuration is unusable."""
        # A misspelt split has no requests: refused here, not reported as an empty arena after the indexes.
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose from {SPLITS}")
        views = self.views()
        check_views(views, parse_quotas(self.channels, "channels"), self.added_quotas())
        if self.generative_quota < 1:
            raise ValueError(f"generative_quota must be >= 1, got {self.generative_quota}")
        if not self.sid_dir and (
            lacking := [n for n, (_, sid) in self.generative_models().items() if sid is None]
        ):
            raise ValueError(
                f"generative model(s) {lacking} need sid_dir (the SID folder they were trained with), or "
                "name=model_dir,sid_dir"
            )
        for name, values, allowed in (
            ("ranking_stages", self.ranking_stages, RANKING_STAGES),
            ("budget_modes", self.budget_modes, BUDGET_MODES),
        ):
            if not values or set(values) - set(allowed):
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
        if "learned" in self.ranking_stages and not self.ranker_dir:
            raise ValueError("ranking stage 'learned' needs ranker_dir (recipes/train_ranker.py output)")
        for view in views if "fixed_budget" in self.budget_modes else ():
            control, total = view.control, sum(view.control.values())
            # Every control channel keeps at least one slot: the added quota must leave one per channel.
            if too_big := {n: q for n, q in view.added.items() if total - q < len(control)}:
                which = "" if view is views[0] else f" `{view.name}`"
                raise ValueError(
                    f"fixed_budget: quota(s) {too_big} leave fewer than one slot for each of the {len(control)} "
                    f"control channel(s) in the{which} control's {total} candidates; lower them or use "
                    "budget_modes: [supplement]"
                )
        for name in ("beam", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.item_order not in ITEM_ORDERS:
            raise ValueError(f"item_order must be one of {ITEM_ORDERS}, got {self.item_order!r}")
        check_beam_score(self.beam_score)
        if self.max_requests < 0:
            raise ValueError(f"max_requests must be >= 0 (0 = all), got {self.max_requests}")

    def resolved_index_dir(self) -> Path:
        return Path(self.index_dir) if self.index_dir else Path(f"{Path(self.output_dir)}_index")


def check_views(views: list[ControlView], channels: dict[str, int], added: dict[str, int]) -> None:
    """Refuses unknown channels, the oracle in a control, a channel with two quotas, and an added channel
    no view can play (the leading view alone: a channel both in control and added); see
    :meth:`ArenaArguments.views`."""
    classical = [n for n in added if not n.startswith(GENERATIVE_PREFIX)]
    for name in [n for view in views for n in view.control] + classical:
        if name not in CLASSICAL_CHANNELS:
            raise ValueError(
                f"unknown channel {name!r}; choose from {CLASSICAL_CHANNELS} (generative models go in "
                "`generative` as name=model_dir)"
            )
    if oracle_in := [view.name for view in views if "oracle" in view.control]:
        raise ValueError(
            f"the oracle channel is a ceiling, not part of a control system (control view(s) {oracle_in}); "
            "list it in `channels`"
        )
    if len(views) == 1:
        if overlap := sorted(set(views[0].control) & set(added)):
            raise ValueError(
                f"channel(s) {overlap} are both in control and added; an arm adds a channel control lacks"
            )
        return
    # one recall per channel serves every view: the same quota everywhere
    seen: dict[str, tuple[str, int]] = {}
    for where, quotas in [("channels", channels)] + [(f"control view {v.name!r}", v.control) for v in views]:
        for name, quota in quotas.items():
            first = seen.setdefault(name, (where, quota))
            if first[1] != quota:
                raise ValueError(
                    f"channel {name!r} has quota {quota} in {where} but {first[1]} in {first[0]}: a channel is "
                    "recalled once per request and serves every control view at one quota"
                )
    if unused := [n for n in added if all(n in view.control for view in views)]:
        raise ValueError(
            f"channel(s) {unused} are in every control view's control, so no arm adds them; an arm adds a "
            "channel its control lacks"
        )
    if armless := [view.name for view in views if not view.added]:
        raise ValueError(
            f"control view(s) {armless} hold every added channel in their control: they have no arm"
        )


def parse_view(spec: str) -> tuple[str, dict[str, int]]:
    """``"legacy=logged:48+bm25:24"`` -> ``("legacy", {"logged": 48, "bm25": 24})``, with clear errors."""
    name, sep, body = str(spec).partition("=")
    name = name.strip()
    if not sep or not VIEW_NAME.fullmatch(name) or not body.strip():
        raise ValueError(
            f"control_views entry {spec!r} must be name=channel:quota+channel:quota, e.g. legacy=logged:48 or "
            "classical=logged:48+bm25:24 (a name of letters, digits, _ and -)"
        )
    return name, parse_quotas([part.strip() for part in body.split("+")], f"control view {name!r}")


def parse_quotas(specs: list[str], what: str) -> dict[str, int]:
    """``["logged:48", "bm25:20"]`` -> ``{"logged": 48, "bm25": 20}``, with clear errors."""
    quotas: dict[str, int] = {}
    for spec in specs:
        name, sep, value = str(spec).partition(":")
        try:
            quota = int(value)
        except ValueError:
            quota = None
        if not sep or not name or quota is None:
            raise ValueError(f"{what} entry {spec!r} must be name:quota, e.g. bm25:48")
        if quota <= 0:
            raise ValueError(f"{what}: the quota of {name!r} must be >= 1, got {quota}")
        if name in quotas:
            raise ValueError(f"{what}: channel {name!r} appears twice")
        quotas[name] = quota
    return quotas


@dataclass(frozen=True)
class Arm:
    """One system of the A/B: its channels with quotas, and the channel it adds over control."""

    name: str
    quotas: dict[str, int]
    added: str | None = None


@dataclass(frozen=True)
class ControlView:
    """A control the arena plays the requests under: its channels with quotas, and the channels its
    arms add (one arm each)."""

    name: str
    control: dict[str, int]
    added: dict[str, int]

    def arms(self, mode: str) -> list[Arm]:
        return build_arms(self.control, self.added, mode)

    def control_specs(self) -> list[str]:
        """The control as ``name:quota`` strings, in its order (``["logged:48", "bm25:24"]``)."""
        return [f"{name}:{quota}" for name, quota in self.control.items()]


def fixed_budget_quotas(control: dict[str, int], added_quota: int) -> dict[str, int]:
    """Control quotas scaled so that they plus ``added_quota`` equal the control's total.

    Largest-remainder rounding keeps the sum exact; a channel keeps at least one slot.

    Raises:
        ValueError: ``added_quota`` leaves fewer slots than control channels (the budget would be exceeded).
    """
    total = sum(control.values())
    target = total - added_quota
    if target < len(control):
        raise ValueError(f"fixed_budget: an added quota of {added_quota} leaves {target} of the control's {total} "
                         f"slots for {len(control)} channel(s), each of which keeps one: the budget would be "
                         "exceeded")  # fmt: skip
    exact = {n: q * target / total for n, q in control.items()}
    quotas = {n: max(int(v), 1) for n, v in exact.items()}
    by_remainder = sorted(control, key=lambda n: exact[n] - int(exact[n]), reverse=True)
    i = 0
    while sum(quotas.values()) < target:
        quotas[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    return quotas


def build_arms(control: dict[str, int], added: dict[str, int], mode: str) -> list[Arm]:
    """The control arm, then one treatment per added channel in ``mode``."""
    if mode not in BUDGET_MODES:
        raise ValueError(f"unknown budget mode {mode!r}; choose from {BUDGET_MODES}")
    arms = [Arm("control", dict(control))]
    for name, quota in added.items():
        base = dict(control) if mode == "supplement" else fixed_budget_quotas(control, quota)
        arms.append(Arm(f"+{name}", {**base, name: quota}, added=name))
    return arms
