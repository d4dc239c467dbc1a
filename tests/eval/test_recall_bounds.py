"""What RecallChannel refuses before the model runs: beam range and type, token text in a query,
unknown history under ``known_history``; and the scored answer the service returns."""

import pytest

from eg_grpo.eval.recall import RecallChannel


@pytest.fixture(scope="module")
def channel(tiny_sft_dir, tiny_sid_dir):
    return RecallChannel(tiny_sft_dir, tiny_sid_dir, device="cpu", max_beam=64)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"beam": 10_000}, ValueError, r"beam must be in \[1, 64\], got 10000"),
        ({"beam": 65}, ValueError, r"beam must be in \[1, 64\]"),
        ({"beam": 0}, ValueError, r"beam must be in \[1, 64\], got 0"),
        ({"beam": 2.5}, TypeError, "beam must be int, got 2.5"),
        ({"beam": 3.0}, TypeError, "beam must be int"),
        ({"beam": "3"}, TypeError, "beam must be int"),
        ({"beam": True}, TypeError, "beam must be int"),
        ({"max_items": 1.5}, TypeError, "max_items must be int"),
        ({"max_items": -1}, ValueError, "max_items must be >= 1"),
    ],
)
def test_beam_and_max_items_are_bounded_ints(channel, kwargs, error, message):
    with pytest.raises(error, match=message):
        channel.recall("pen", [], **{"beam": 2, "max_items": 5, **kwargs})
    with pytest.raises(error, match=message):
        channel.check_request("pen", [], **{"beam": 2, "max_items": 5, **kwargs})


def test_max_beam_is_the_largest_beam_served(channel):
    assert len(channel.recall_sids(["pen"], [[]], beam=64)[0]) == min(64, len(channel.codebook.valid_sids()))
    with pytest.raises(ValueError, match="max_beam must be >= 1"):
        RecallChannel.from_model(channel.model, channel.tokenizer, channel.codebook, max_beam=0)


@pytest.mark.parametrize(
    "query", ["<a_1><b_2><c_3>", "red pen <b_0>", "pen<|endoftext|>", "<|pad|> pen", "<a_0> " + "pen " * 300]
)
def test_token_text_in_a_query_is_refused(channel, query):
    """SID and special tokens are added tokens the tokenizer matches in raw text: let through, a query
    would write SIDs (or an end token) into the prompt."""
    ids = channel.tokenizer(query, add_special_tokens=False).input_ids
    added = set(channel.tokenizer.get_added_vocab().values())
    if len(query) < 100:  # the premise: this text does become an added token
        assert added & set(ids)
    with pytest.raises(ValueError, match="a query is plain text"):
        channel.recall(query, [], beam=2, max_items=5)
    with pytest.raises(ValueError, match="a query is plain text"):
        channel.check_request(query, [])


def test_token_text_cut_off_with_a_long_query_never_reaches_the_prompt(channel):
    query = "pen " * 300 + "<a_0>"
    assert "<a_0>" not in channel.clean_query(query)  # the cap removed it: nothing to refuse
    channel.check_request(query, [])


def test_text_that_only_looks_like_tokens_is_a_query(channel):
    for query in ["<a_ 1>", "a_1 b_2", "<x_1>", "size <10>"]:
        assert channel.clean_query(query) == query
        channel.check_request(query, [])


def test_known_history_refuses_unknown_items(channel, tiny_log):
    known = tiny_log.items["item_id"].tolist()[:3]
    channel.check_request("pen", known, known_history=True)
    channel.check_request("pen", known + [10**9])  # recall() leaves it out of the prompt
    with pytest.raises(ValueError, match=r"1 unknown item id\(s\), e.g. \[1000000000\]"):
        channel.check_request("pen", known + [10**9], known_history=True)
    with pytest.raises(TypeError, match="item ids are int"):
        channel.check_request("pen", [1.5], known_history=True)


def test_scored_recall_is_recall_with_each_items_sid_and_score(channel, tiny_log, tiny_codebook):
    rows = tiny_log.split("test").head(2)
    queries, histories = rows["query"].tolist(), rows["history"].tolist()
    scored = channel.recall_scored_batch(queries, histories, beam=4, max_items=7)
    assert [[item for item, _, _ in r] for r in scored] == channel.recall_batch(queries, histories, 4, 7)
    sids = channel.recall_sids(queries, histories, beam=4)
    for answer, beam_sids in zip(scored, sids):
        assert [sid for _, sid, _ in answer] == sorted((s for _, s, _ in answer), key=beam_sids.index)
        for item, sid, score in answer:
            assert item in tiny_codebook.items_of(sid).tolist()
            assert isinstance(score, float) and score <= 0.0  # a log-probability
        scores = [score for _, _, score in answer]
        assert scores == sorted(scores, reverse=True)  # best cluster first
