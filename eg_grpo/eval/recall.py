"""The generative recall channel, called the way a search service calls a recall channel.

    >>> channel = RecallChannel("outputs/demo/sft", "outputs/demo/sids")
    >>> channel.recall("red ball pen", history=[12, 873], beam=20, max_items=200)
    [4411, 4415, 90, ...]

A request is a query and the user's recent item ids; the answer is item ids, best first. The model
writes ``beam`` distinct SIDs by trie-constrained beam search; each SID is a cluster, expanded into
its items in beam order until ``max_items`` are collected. Inside a cluster the items come in the
order of ``item_scores`` (e.g. popularity) when given, else in the codebook's order; the ranking
stage downstream reorders them anyway. An item without a score (launched after the scores were
counted) comes last under ``item_order="clicks"``; ``item_order="prior"`` gives it its cluster's
mean score instead, a fair chance before it has clicks of its own.

The catalogue is live: :meth:`RecallChannel.refresh` swaps in a later SID version (the ``add_items``
stage: the same SIDs plus launched items) without reloading the model. Codebook, trie and cluster
order form one immutable snapshot, replaced by a single assignment, and a request reads the
snapshot once, so a refresh while other threads recall never mixes two versions in one answer.

As a service boundary it checks its inputs: a query must be ``str`` (bytes, None or numbers are a
``TypeError``; text that is not valid Unicode a ``ValueError``), and it is cut to
``max_query_tokens`` tokens, characters first, so a 1M-character query costs what a 64-token one
does. Text that would tokenise to an added token (a SID token like ``<a_1>``, or a special token
like the end token) is refused with a ``ValueError``: a query is text, never SID or control tokens
of the prompt. ``beam`` and ``max_items`` must be ``int``; ``beam`` is at most ``max_beam``. Only
the newest ``4 * max_history`` history entries are read.
"""

from __future__ import annotations

import logging
import numbers
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY, build_prompt
from eg_grpo.data.schema import format_profile
from eg_grpo.data.sft_dataset import check_tokenizer_has_sids, load_codebook
from eg_grpo.decoding import SIDTrie, check_beam_score, generate_sids, logits_width
from eg_grpo.io import check_lineage
from eg_grpo.modeling import load_model_and_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUERY_TOKENS = 64
# Beam search costs O(beam) rows per prompt; a caller-chosen beam of 10,000 must be an error, not a stall.
DEFAULT_MAX_BEAM = 256
# A query is cut to this many characters per allowed token before it is tokenised: BPE tokens of
# text are far shorter, so the token cap still decides, but tokenising costs O(cap), not O(query).
_CHARS_PER_TOKEN = 16
# How items are ordered inside a cluster: by score (an unscored item last), or with an unscored
# item at its cluster's mean score (a launched item competes before it has clicks).
ITEM_ORDERS = ("clicks", "prior")


def _check_query(query) -> str:
    if isinstance(query, bytes | bytearray):
        raise TypeError("query must be str, got bytes: decode it first, e.g. query.decode('utf-8')")
    if query is None:
        raise TypeError("query must be str, got None: pass '' for a request without a query")
    if not isinstance(query, str):
        raise TypeError(f"query must be str, got {type(query).__name__}")
    return query


def _check_profile(profile):
    """A profile as the prompt builder takes it; a malformed one is a ValueError naming the shape."""
    if not (profile is None or isinstance(profile, str | Mapping)):
        raise TypeError(
            f"profile must be a str like 'power=premium', a mapping or None, got {type(profile).__name__}"
        )
    return format_profile(profile) or None


def _check_history(history, tail: int) -> list[int]:
    if isinstance(history, str | bytes | bytearray) or not isinstance(history, Sequence | np.ndarray):
        raise TypeError(f"history must be a sequence of item ids (int), got {type(history).__name__}")
    recent = list(history[-tail:]) if tail else []
    for item in recent:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"history holds {item!r} ({type(item).__name__}); item ids are int")
    return [int(i) for i in recent]


def _check_count(name: str, value, high: int | None = None) -> int:
    # bool is an int subclass and 2.5 or "3" would reach torch as a beam count: only true ints pass.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be int, got {value!r} ({type(value).__name__})")
    if value < 1 or (high is not None and value > high):
        raise ValueError(
            f"{name} must be in [1, {high}], got {value}" if high else f"{name} must be >= 1, got {value}"
        )
    return int(value)


@dataclass(frozen=True)
class _Catalogue:
    """One SID version as the channel serves it: built whole, never changed, replaced by :meth:`refresh`.

    ``members`` caches each cluster's ordered items for this version only (filled lazily; a dict
    insert is atomic, and two threads filling one entry write equal values).
    """

    codebook: object
    trie: SIDTrie
    sid_of: Mapping[int, tuple[int, ...]]
    members: dict
    item_scores: Mapping[int, float] | None
    item_order: str
    sid_dir: Path | None


class RecallChannel:
    """A trained SID generator behind a ``recall(query, history, beam, max_items)`` call.

    Args:
        model_dir: a model folder saved by ``recipes/sft.py`` or ``recipes/eg_grpo.py``.
        sid_dir: the SID folder the model was trained with (``build_sids.py`` output or a codebook folder).
        item_scores: optional item id → score; items inside a cluster are returned by descending score.
        item_titles: optional item id → title, used in the prompt only if the model was trained with titles.
        max_history: history items in the prompt (as in training).
        use_titles: whether the prompt carries titles (as in training).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        batch_size: prompts per beam-search call in :meth:`recall_batch`.
        max_query_tokens: queries are cut to this many tokens (64: longer than any real search query;
            training prompts hold far fewer).
        item_order: ``"clicks"`` (by ``item_scores``, an unscored item last) or ``"prior"`` (an
            unscored item at its cluster's mean score), see :data:`ITEM_ORDERS`.
        max_beam: the largest ``beam`` a request may ask for (a larger one is a ``ValueError``).
        beam_score: what ranks the beams: ``"model"`` (the full model's ``log p``) or ``"constrained"``
            (the trie-renormalised policy's ``log π_c``); see :func:`~eg_grpo.decoding.generate_sids`.

    Raises:
        ValueError: the model's tokenizer lacks the codebook's SID tokens, or the model was trained
            with another SID folder (its ``stage.json`` says which).
    """

    def __init__(
        self,
        model_dir: str | Path,
        sid_dir: str | Path,
        item_scores: Mapping[int, float] | None = None,
        item_titles: Mapping[int, str] | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
        use_titles: bool = False,
        device: str = "auto",
        batch_size: int = 16,
        max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
        item_order: str = "clicks",
        max_beam: int = DEFAULT_MAX_BEAM,
        beam_score: str = "model",
    ):
        check_beam_score(beam_score)  # before the model loads
        check_lineage(sid_dir=sid_dir, model_dir=model_dir)
        model, tokenizer = load_model_and_tokenizer(str(model_dir))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._attach(model.to(device), tokenizer, load_codebook(sid_dir), item_scores, item_titles, max_history,
                     use_titles, batch_size, max_query_tokens, item_order, Path(sid_dir), max_beam,
                     beam_score)  # fmt: skip
        self.model_dir = Path(model_dir)

    @classmethod
    def from_model(
        cls,
        model,
        tokenizer,
        codebook,
        item_scores: Mapping[int, float] | None = None,
        item_titles: Mapping[int, str] | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
        use_titles: bool = False,
        batch_size: int = 16,
        max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
        item_order: str = "clicks",
        max_beam: int = DEFAULT_MAX_BEAM,
        beam_score: str = "model",
    ) -> RecallChannel:
        """The channel over a model already in memory (the policy while it trains): nothing is loaded
        or moved, the trie goes to the model's device. Arguments as for the constructor, ``codebook``
        an :class:`~eg_grpo.sid.codebook.SIDCodebook`."""
        channel = cls.__new__(cls)
        channel._attach(model, tokenizer, codebook, item_scores, item_titles, max_history, use_titles, batch_size,
                        max_query_tokens, item_order, max_beam=max_beam, beam_score=beam_score)  # fmt: skip
        return channel

    def _attach(self, model, tokenizer, codebook, item_scores, item_titles, max_history, use_titles, batch_size,
                max_query_tokens, item_order="clicks", sid_dir=None, max_beam=DEFAULT_MAX_BEAM,
                beam_score="model") -> None:  # fmt: skip
        self.beam_score = check_beam_score(beam_score)
        if max_query_tokens < 1:
            raise ValueError(f"max_query_tokens must be >= 1, got {max_query_tokens}")
        self.max_beam = _check_count("max_beam", max_beam)
        if use_titles and item_titles is None:
            raise ValueError("use_titles=True needs item_titles (item id -> title)")
        self.max_query_tokens = max_query_tokens
        self.model, self.tokenizer = model, tokenizer
        self.vocab = check_tokenizer_has_sids(tokenizer, codebook)
        # Added tokens (SID and special tokens) are matched in raw text by the tokenizer, so a query
        # holding their text would put SID or control tokens into the prompt; longest first, so a
        # token that is a prefix of another never hides it.
        added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
        self._added_tokens = re.compile("|".join(map(re.escape, added))) if added else None
        self.item_titles, self.use_titles = item_titles, use_titles
        self.max_history, self.batch_size = max_history, batch_size
        self.model_dir: Path | None = None
        self._refresh_lock = threading.Lock()
        self._catalogue = self._build_catalogue(codebook, item_scores, item_order, sid_dir)

    def _build_catalogue(self, codebook, item_scores, item_order, sid_dir) -> _Catalogue:
        if item_order not in ITEM_ORDERS:
            raise ValueError(f"item_order must be one of {ITEM_ORDERS}, got {item_order!r}")
        if tuple(codebook.codebook_sizes) != tuple(self.vocab.codebook_sizes):
            raise ValueError(
                f"codebook sizes {codebook.codebook_sizes} != the model's SID tokens {self.vocab.codebook_sizes}"
            )
        trie = SIDTrie.from_sid_token_ids(codebook.sid_token_ids(self.vocab), logits_width(self.model))
        sid_of = {int(i): tuple(int(c) for c in row) for i, row in zip(codebook.item_ids, codebook.codes)}
        return _Catalogue(codebook, trie.to(next(self.model.parameters()).device), sid_of, {}, item_scores,
                          item_order, None if sid_dir is None else Path(sid_dir))  # fmt: skip

    # The served version's parts, read from one snapshot (see _Catalogue).
    codebook = property(lambda self: self._catalogue.codebook)
    trie = property(lambda self: self._catalogue.trie)
    _sid_of = property(lambda self: self._catalogue.sid_of)
    _item_scores = property(lambda self: self._catalogue.item_scores)

    def refresh(self, sid_dir: str | Path, item_scores: Mapping[int, float] | None = None) -> None:
        """Serves a later SID version (e.g. the ``add_items`` stage's output) from now on, model unchanged.

        The new snapshot is built and checked first, then put in place by one assignment: requests
        already running finish on the version they started with, later ones see the new one, and a
        failed refresh leaves the current version served.

        Args:
            sid_dir: the new SID folder.
            item_scores: the new item scores (None: keep the current ones).

        Raises:
            ValueError: the folder is not a later version of what the model serves (another item lost
                or changed its SID, or the model was trained with unrelated SIDs).
        """
        from eg_grpo.sid.add_items import check_keeps_sids

        with self._refresh_lock:  # two refreshes at once: the later one wins, never a mix
            current = self._catalogue
            if self.model_dir is not None:
                check_lineage(sid_dir=sid_dir, model_dir=self.model_dir)
            codebook = load_codebook(sid_dir)
            try:
                check_keeps_sids(current.codebook, codebook)
            except ValueError as err:
                raise ValueError(
                    f"{sid_dir} is not a later version of the SIDs this channel serves: {err}"
                ) from err
            scores = current.item_scores if item_scores is None else item_scores
            self._catalogue = self._build_catalogue(codebook, scores, current.item_order, sid_dir)
        logger.info("recall channel now serves %s (%d items)", sid_dir, len(codebook.item_ids))

    def clean_query(self, query: str) -> str:
        """``query`` checked and cut to ``max_query_tokens`` tokens (characters are cut first)."""
        head = _check_query(query)[: self.max_query_tokens * _CHARS_PER_TOKEN]
        try:
            head.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"query is not valid text: {err.reason} at character {err.start}") from None
        cap = self.max_query_tokens
        if len(head) > cap:  # never more tokens than characters: a short query needs no tokenising
            ids = self.tokenizer(
                head, add_special_tokens=False, truncation=True, max_length=cap + 1
            ).input_ids
            head = self.tokenizer.decode(ids[:cap], skip_special_tokens=True) if len(ids) > cap else head
        if self._added_tokens is not None and (found := self._added_tokens.search(head)):
            raise ValueError(
                f"query holds the token text {found.group()!r} (a SID or special token); a query is plain text"
            )
        return head

    def check_request(self, query: str, history: Sequence[int] = (), beam: int = 20, max_items: int = 200,
                      profile=None, known_history: bool = False) -> None:  # fmt: skip
        """Raises what :meth:`recall` would raise for this request, without running the model (a
        service checks a request before it queues it).

        Args:
            known_history: also refuse history item ids unknown to the served SID version
                (:meth:`recall` leaves them out of the prompt instead).

        Raises:
            TypeError: an argument of the wrong type.
            ValueError: an argument out of range, a query holding token text, or (``known_history``)
                unknown item ids.
        """
        _check_count("beam", beam, self.max_beam)
        _check_count("max_items", max_items)
        catalogue = self._catalogue
        if known_history:
            unknown = [i for i in _check_history(history, 4 * self.max_history) if i not in catalogue.sid_of]
            if unknown:
                raise ValueError(f"history holds {len(unknown)} unknown item id(s), e.g. {unknown[:5]}")
        self._prompt(query, history, profile, catalogue)

    def _prompt(self, query: str, history: Sequence[int], profile=None, catalogue=None) -> str:
        sid_of = (catalogue or self._catalogue).sid_of
        # Items unknown to the codebook (new since the SIDs were built) carry no SID: they are left out.
        known = [i for i in _check_history(history, 4 * self.max_history) if i in sid_of]
        titles = [self.item_titles.get(i, "") for i in known] if self.use_titles else None
        return build_prompt(
            self.clean_query(query),
            [sid_of[i] for i in known],
            titles,
            tokenizer=self.tokenizer,
            max_history=self.max_history,
            profile=_check_profile(profile),
        )

    def _items(self, sid: tuple[int, ...], catalogue: _Catalogue | None = None) -> np.ndarray:
        catalogue = catalogue or self._catalogue
        members = catalogue.members.get(sid)
        if members is None:
            members = catalogue.codebook.items_of(sid)
            if catalogue.item_scores is not None and len(members) > 1:
                scores = np.array([catalogue.item_scores.get(int(i), np.nan) for i in members], dtype=float)
                unscored = np.isnan(scores)
                fill = float("-inf")
                if catalogue.item_order == "prior" and unscored.any() and not unscored.all():
                    # the cluster's mean: the best guess for a newcomer without clicks of its own
                    fill = float(scores[~unscored].mean())
                scores[unscored] = fill
                members = members[np.argsort(-scores, kind="stable")]
            catalogue.members[sid] = members
        return members

    def expand(
        self, sids: Sequence[tuple[int, ...]], max_items: int, catalogue: _Catalogue | None = None
    ) -> list[int]:
        """Items of ``sids`` in order, cut at ``max_items`` (an item in two clusters appears once)."""
        return [item for item, _ in self._expand(sids, max_items, catalogue or self._catalogue)]

    def _expand(self, sids, max_items: int, catalogue: _Catalogue) -> list[tuple[int, tuple[int, ...]]]:
        out, seen = [], set()
        for sid in sids:
            for item in self._items(sid, catalogue).tolist():
                if item not in seen:
                    seen.add(item)
                    out.append((item, sid))
                    if len(out) >= max_items:
                        return out
        return out

    def recall_sids(self, queries: Sequence[str], histories: Sequence[Sequence[int]], beam: int, profiles=None,
                    catalogue: _Catalogue | None = None):  # fmt: skip
        """Per request, the ``beam`` best SIDs (code tuples), best first (``catalogue``: the snapshot to use)."""
        return [
            [sid for sid, _ in found]
            for found in self._scored_sids(queries, histories, beam, profiles, catalogue)
        ]

    def _scored_sids(self, queries, histories, beam, profiles=None, catalogue=None):
        catalogue = catalogue or self._catalogue
        beam = _check_count("beam", beam, self.max_beam)
        profiles = [None] * len(queries) if profiles is None else profiles
        prompts = [self._prompt(q, h, p, catalogue) for q, h, p in zip(queries, histories, profiles)]
        candidates = generate_sids(
            self.model,
            self.tokenizer,
            prompts,
            catalogue.trie,
            mode="beam",
            num=beam,
            batch_size=self.batch_size,
            score=self.beam_score,
        )
        return [
            [(sid, float(c.score)) for c in cands if (sid := self.vocab.decode(c.token_ids)) is not None]
            for cands in candidates
        ]

    def recall_batch(
        self,
        queries: Sequence[str],
        histories: Sequence[Sequence[int]],
        beam: int = 20,
        max_items: int = 200,
        profiles: Sequence | None = None,
    ) -> list[list[int]]:
        """:meth:`recall` for many requests at once (batched beam search); ``profiles``: one per
        request (or None for none)."""
        return [[item for item, _, _ in found] for found in
                self.recall_scored_batch(queries, histories, beam, max_items, profiles)]  # fmt: skip

    def recall_scored_batch(
        self,
        queries: Sequence[str],
        histories: Sequence[Sequence[int]],
        beam: int = 20,
        max_items: int = 200,
        profiles: Sequence | None = None,
    ) -> list[list[tuple[int, tuple[int, ...], float]]]:
        """:meth:`recall_batch` with each item's SID (its cluster) and that SID's beam score
        (``log p(sid, eos | prompt)``, or ``log π_c`` under ``beam_score="constrained"``): per request,
        ``(item, sid, score)`` in recall order."""
        if isinstance(queries, str | bytes) or isinstance(histories, str | bytes):
            raise TypeError(
                "recall_batch takes a list of queries and a list of histories; use recall() for one"
            )
        if len(queries) != len(histories):
            raise ValueError(f"{len(queries)} queries but {len(histories)} histories")
        if profiles is not None and (isinstance(profiles, str | bytes) or len(profiles) != len(queries)):
            raise ValueError(
                f"profiles must be a list of one profile (or None) per query, got {profiles!r:.80}"
            )
        _check_count("beam", beam, self.max_beam)
        max_items = _check_count("max_items", max_items)
        catalogue = self._catalogue  # read once: the whole batch is answered from one SID version
        out = []
        for found in self._scored_sids(queries, histories, beam, profiles, catalogue):
            score_of = dict(found)
            pairs = self._expand(list(score_of), max_items, catalogue)
            out.append([(item, sid, score_of[sid]) for item, sid in pairs])
        return out

    def recall(
        self, query: str, history: Sequence[int] = (), beam: int = 20, max_items: int = 200, profile=None
    ) -> list[int]:
        """Item ids for one request, best cluster first, at most ``max_items``.

        Args:
            query: the query text (``""`` for recommendation).
            history: the user's recent item ids, oldest first.
            beam: number of SIDs (clusters) generated.
            max_items: the item budget of this channel.
            profile: the user's coarse profile (``"power=premium"`` or a mapping), for a model trained
                with profiles (data built with ``user_profile: true``); None or ``""``: no ``user:`` line.
        """
        return self.recall_batch([query], [history], beam, max_items, profiles=[profile])[0]
