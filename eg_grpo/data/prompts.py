"""The one prompt builder: query text + the user's recent history (as SIDs) → the generator's prompt.

SFT, RL and evaluation all call :func:`build_prompt`, so a prompt is never built two ways. The layout
is deliberately compact (a 3-level SID is 3 tokens; a history of 10 items is 30 tokens):

    user: power=premium
    history: <a_3><b_9><c_1><a_7><b_2><c_4>
    query: red ball pen
    sid:

- the SIDs of the history are written back to back: the level letters already mark where one
  item ends, and a separator would cost one token per item;
- the history is chronological, most recent item last, cut to the last ``max_history`` items;
- an empty query (pure recommendation) drops the ``query:`` line, an empty history the
  ``history:`` line, so neither spends tokens on a placeholder;
- the ``user:`` line appears only for a request with a profile (a few categorical features, see
  :func:`eg_grpo.data.schema.parse_profile`): without one the prompt is exactly what it was before
  profiles existed, so models trained on profile-free data read the same text;
- titles, when given, follow their SID in the history (``<a_3><b_9><c_1> Blue pen;``): useful for a
  pretrained model, mostly noise for a tiny one trained from scratch.

With a tokenizer that has a chat template (an instruct model), the same text becomes one user
message and the template is applied with the generation prompt, so the completion (the SID tokens
and the end token) is exactly what the assistant writes. Either way the result is a string whose
last character is the boundary of the completion: the SID tokens are added tokens, so tokenising
``prompt + completion`` never merges across that boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eg_grpo.data.schema import parse_profile
from eg_grpo.sid.tokens import parse_sid_text, sid_to_text

DEFAULT_MAX_HISTORY = 10
SYSTEM_PROMPT = "You are a product search engine. Answer with the semantic ID of the item to show."


def _sid_as_text(sid) -> str:
    if isinstance(sid, str):
        return sid
    return sid_to_text(sid)


def prompt_text(
    query: str,
    history_sids: Sequence,
    history_titles: Sequence[str] | None = None,
    max_history: int = DEFAULT_MAX_HISTORY,
    profile: Mapping[str, object] | str | None = None,
    item_title: str | None = None,
) -> str:
    """The plain-text body of a prompt, without chat template and without the final ``sid:`` cue.

    Args:
        query: the search query; ``""`` for pure recommendation.
        history_sids: the user's past items, oldest first, each a SID (code tuple or its text).
        history_titles: optional titles aligned with ``history_sids``.
        max_history: keep only the last ``max_history`` items (0 keeps none).
        profile: the user's coarse profile, as the ``profile`` column's ``"key=value;..."`` text or
            a mapping; ``None`` or empty adds nothing.
        item_title: an item's title, for the item → SID alignment task (``item: ...``, last line);
            ``None`` adds nothing.

    Returns:
        The lines ``user: ...``, ``history: ...``, ``query: ...`` and ``item: ...`` that are not empty,
        joined by newlines.
    """
    if history_titles is not None and len(history_titles) != len(history_sids):
        raise ValueError(
            f"history_titles has {len(history_titles)} entries but history_sids has {len(history_sids)}; "
            "pass one title per history item or none"
        )
    if max_history < 0:
        raise ValueError(f"max_history must be >= 0, got {max_history}")
    start = max(0, len(history_sids) - max_history)
    sids = [_sid_as_text(s) for s in list(history_sids)[start:]]
    lines = []
    features = parse_profile(profile) if isinstance(profile, str) else dict(profile or {})
    if features:
        lines.append("user: " + " ".join(f"{k}={v}" for k, v in features.items()))
    if sids:
        if history_titles is None:
            lines.append("history: " + "".join(sids))
        else:
            titles = [" ".join(str(t).split()) for t in list(history_titles)[start:]]
            lines.append("history: " + " ".join(f"{s} {t};" for s, t in zip(sids, titles)))
    query = " ".join((query or "").split())
    if query:
        lines.append(f"query: {query}")
    item_title = " ".join((item_title or "").split())
    if item_title:
        lines.append(f"item: {item_title}")
    return "\n".join(lines)


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def build_prompt(
    query: str,
    history_sids: Sequence,
    history_titles: Sequence[str] | None = None,
    tokenizer=None,
    max_history: int = DEFAULT_MAX_HISTORY,
    system_prompt: str | None = SYSTEM_PROMPT,
    profile: Mapping[str, object] | str | None = None,
    item_title: str | None = None,
) -> str:
    """Builds the generator's prompt for one request.

    Args:
        query: the search query (``""`` for recommendation).
        history_sids: past items of the user, oldest first, as SIDs (code tuples or SID text).
        history_titles: optional titles, aligned with ``history_sids``.
        tokenizer: when it has a chat template, the prompt is one user message rendered with
            ``add_generation_prompt=True``; otherwise (or when None) plain text ending in ``"sid:"``.
        max_history: the number of most recent history items kept.
        system_prompt: system message for chat templates (None: the template's default).
        profile: the user's coarse profile (``"power=premium"`` or a mapping); None: no ``user:`` line.
        item_title: an item title for the item → SID task (``item: ...``); None: no such line.

    Returns:
        The prompt string; the completion (SID tokens + eos) is appended to it verbatim.

    Example:
        >>> build_prompt("red pen", [(3, 9, 1), (7, 2, 4)])
        'history: <a_3><b_9><c_1><a_7><b_2><c_4>\\nquery: red pen\\nsid:'
    """
    body = prompt_text(query, history_sids, history_titles, max_history, profile, item_title)
    if has_chat_template(tokenizer):
        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append({"role": "user", "content": body or "recommend an item"})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{body}\nsid:" if body else "sid:"


def completion_text(sid, tokenizer) -> str:
    """The completion string of a SID for TRL's prompt-completion format: SID tokens + eos token."""
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos_token; a SID completion ends with it")
    return _sid_as_text(sid) + tokenizer.eos_token


def completion_ids(sid, vocab) -> list[int]:
    """The completion token ids of a SID (``SIDVocab.encode``: one id per level, then eos)."""
    return vocab.encode(parse_sid_text(sid) if isinstance(sid, str) else tuple(int(c) for c in sid))
