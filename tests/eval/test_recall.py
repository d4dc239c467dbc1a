"""The recall API (eg_grpo.eval.recall.RecallChannel) on the tiny trained model."""

import pytest

from eg_grpo.eval.recall import RecallChannel


@pytest.fixture(scope="module")
def channel(tiny_sft_dir, tiny_sid_dir):
    return RecallChannel(tiny_sft_dir, tiny_sid_dir, device="cpu")


def test_recall_returns_items_of_the_beam_clusters_in_order(channel, tiny_log, tiny_codebook):
    request = tiny_log.split("test").iloc[0]
    sids = channel.recall_sids([request["query"]], [request["history"]], beam=5)[0]
    assert len(sids) == 5 and len(set(sids)) == 5
    items = channel.recall(request["query"], request["history"], beam=5, max_items=1000)
    expected = [i for s in sids for i in tiny_codebook.items_of(s).tolist()]
    assert items == expected  # clusters expanded in beam order, nothing cut
    cut = channel.recall(request["query"], request["history"], beam=5, max_items=4)
    assert cut == expected[:4]
    catalogue = set(tiny_log.items["item_id"].tolist())
    assert set(items) <= catalogue and len(set(items)) == len(items)


def test_item_scores_order_items_inside_a_cluster(tiny_sft_dir, tiny_sid_dir, tiny_codebook):
    big = max(map(tuple, tiny_codebook.valid_sids().tolist()), key=lambda s: len(tiny_codebook.items_of(s)))
    members = tiny_codebook.items_of(big).tolist()
    assert len(members) >= 2
    scores = {item: float(rank) for rank, item in enumerate(members)}  # last member scores highest
    channel = RecallChannel(tiny_sft_dir, tiny_sid_dir, item_scores=scores, device="cpu")
    assert channel.expand([big], max_items=100) == members[::-1]


def test_batch_unknown_history_and_bad_arguments(channel, tiny_log):
    rows = tiny_log.split("valid").head(3)
    batch = channel.recall_batch(rows["query"].tolist(), rows["history"].tolist(), beam=3, max_items=10)
    single = [channel.recall(q, h, beam=3, max_items=10) for q, h in zip(rows["query"], rows["history"])]
    assert batch == single
    # an item the codebook has never seen (new in the catalogue) is left out of the prompt, not an error
    assert channel._prompt("pen", [10**9]) == channel._prompt("pen", [])
    with pytest.raises(ValueError, match=r"beam must be in \[1, 256\], got 0"):
        channel.recall("pen", [], beam=0)
    with pytest.raises(ValueError, match="histories"):
        channel.recall_batch(["a", "b"], [[]], beam=2)


def test_a_million_character_query_costs_what_the_cap_allows(channel, tiny_log):
    import time

    request = tiny_log.split("test").iloc[0]
    word = request["query"] or "pen"
    huge = (word + " ") * (1_000_000 // (len(word) + 1) + 1)
    assert len(huge) >= 1_000_000
    start = time.perf_counter()
    items = channel.recall(huge, request["history"], beam=3, max_items=10)
    seconds = time.perf_counter() - start
    assert seconds < 10, f"a 1M-character query took {seconds:.1f} s"
    # it is the query cut to max_query_tokens tokens, nothing else
    cut = channel.clean_query(huge)
    assert len(channel.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= channel.max_query_tokens
    assert items == channel.recall(cut, request["history"], beam=3, max_items=10)
    assert channel.clean_query(word) == word  # a normal query is untouched


@pytest.mark.parametrize(
    ("query", "history", "error", "message"),
    [
        (b"red pen", [], TypeError, "got bytes: decode it first"),
        (None, [], TypeError, "pass '' for a request without a query"),
        (42, [], TypeError, "query must be str, got int"),
        ("pen\ud800", [], ValueError, "not valid text"),
        ("pen", "12", TypeError, "history must be a sequence of item ids"),
        ("pen", [1, "2"], TypeError, "item ids are int"),
    ],
)
def test_bad_requests_are_clear_errors(channel, query, history, error, message):
    with pytest.raises(error, match=message):
        channel.recall(query, history, beam=2, max_items=5)


def test_a_model_trained_with_other_sids_is_refused(tiny_sft_dir, tiny_sid_dir, tiny_codebook, tmp_path):
    import numpy as np

    from eg_grpo.sid.codebook import SIDCodebook

    codes = tiny_codebook.codes.copy()
    codes[:, -1] = (codes[:, -1] + 1) % tiny_codebook.codebook_sizes[-1]
    other = tmp_path / "other_sids"
    SIDCodebook(
        tiny_codebook.codebook_sizes, np.asarray(tiny_codebook.item_ids), codes, method="reference"
    ).save(other / "codebook")
    with pytest.raises(ValueError, match="trained with other SIDs"):
        RecallChannel(tiny_sft_dir, other, device="cpu")


def test_profile_prompt_is_the_training_prompt(channel, tiny_log, tiny_codebook):
    """A request's profile reaches the prompt exactly as SFT rendered it; no profile changes nothing."""
    from eg_grpo.data.sft_dataset import request_prompts

    rows = tiny_log.split("test").head(2).copy()
    rows["profile"] = ["power=premium", ""]
    trained = request_prompts(tiny_log, rows, tiny_codebook, tokenizer=channel.tokenizer, max_history=10)
    served = [channel._prompt(q, h, p) for q, h, p in zip(rows["query"], rows["history"], rows["profile"])]
    assert served == trained
    assert "user: power=premium" in served[0] and "user:" not in served[1]
    plain = channel._prompt(rows["query"].iloc[0], rows["history"].iloc[0])
    assert channel._prompt(rows["query"].iloc[0], rows["history"].iloc[0], {"power": "premium"}) == served[0]
    assert served[0] != plain and "user:" not in plain
    q, h = rows["query"].iloc[0], rows["history"].iloc[0]
    with_profile = channel.recall_batch([q], [h], beam=3, max_items=10, profiles=["power=premium"])
    assert with_profile == [channel.recall(q, h, beam=3, max_items=10, profile="power=premium")]
    with pytest.raises(ValueError, match="key=value"):
        channel.recall(q, h, profile="power premium")
    with pytest.raises(TypeError, match="profile must be"):
        channel.recall(q, h, profile=3)
    with pytest.raises(ValueError, match="one profile"):
        channel.recall_batch([q, q], [h, h], profiles=["power=premium"])
