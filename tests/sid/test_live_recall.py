"""RecallChannel.refresh: a model saved before new items launched recalls them through their clusters."""

import threading

import numpy as np
import pytest
from live_catalogue import new_items_like, one_hot_vectors, with_quantizer, write_sid_version

import eg_grpo.eval.recall as recall_module
from eg_grpo.eval.recall import RecallChannel
from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.stages.add_items import AddItemsArguments, run


@pytest.fixture(scope="module")
def live(tiny_sft_dir, tiny_log, tiny_codebook, tiny_data_dir, tmp_path_factory):
    """The tiny model, the SIDs it was trained on (v0, with a frozen model) and v1 = v0 + one launched
    item placed in the first cluster the model writes for a test request."""
    root = tmp_path_factory.mktemp("live_recall")
    v0 = write_sid_version(with_quantizer(tiny_codebook, tiny_log.items), root / "v0", tiny_data_dir)
    model, tokenizer = load_model_and_tokenizer(str(tiny_sft_dir))
    channel = RecallChannel.from_model(model, tokenizer, tiny_codebook)
    request = tiny_log.split("test").iloc[0]
    top_sid = channel.recall_sids([request["query"]], [request["history"]], beam=3)[0][0]
    source = tiny_codebook.items_of(top_sid)[:1]
    new = new_items_like(tiny_log.items, source, 90_000, "launched")
    new.to_parquet(root / "new.parquet", index=False)
    np.save(root / "new.npy", one_hot_vectors([top_sid], tiny_codebook.codebook_sizes))
    run(AddItemsArguments(sid_dir=str(v0), new_items=str(root / "new.parquet"),
                          new_item_vectors=str(root / "new.npy"), output_dir=str(root / "v1")))  # fmt: skip
    return {"model": model, "tokenizer": tokenizer, "v0": v0, "v1": root / "v1", "request": request,
            "sid": top_sid, "new_item": 90_000}  # fmt: skip


def _channel(live, **kw):
    from eg_grpo.data.sft_dataset import load_codebook

    return RecallChannel.from_model(live["model"], live["tokenizer"], load_codebook(live["v0"]), **kw)


def test_a_model_saved_before_the_launch_recalls_the_new_item_through_its_cluster(live):
    channel, request = _channel(live), live["request"]
    before = channel.recall(request["query"], request["history"], beam=3, max_items=1000)
    assert live["new_item"] not in before
    channel.refresh(live["v1"])
    sids = channel.recall_sids([request["query"]], [request["history"]], beam=3)[0]
    after = channel.recall(request["query"], request["history"], beam=3, max_items=1000)
    assert sids[0] == live["sid"] and live["new_item"] in after
    assert channel.codebook.sid_of(live["new_item"]) == live["sid"]
    # every item recalled before is still recalled, in the same clusters
    assert set(before) <= set(after) and len(after) == len(before) + 1


def test_item_order_prior_gives_a_new_item_its_clusters_mean_score(live):
    from eg_grpo.data.sft_dataset import load_codebook

    members = load_codebook(live["v0"]).items_of(live["sid"]).tolist()
    scores = {
        item: float(rank + 1) for rank, item in enumerate(members)
    }  # the last old member scores highest
    clicks, prior = _channel(live, item_scores=scores), _channel(live, item_scores=scores, item_order="prior")
    for channel in (clicks, prior):
        channel.refresh(live["v1"])
    assert clicks.expand([live["sid"]], 100)[-1] == live["new_item"]  # unscored: last, as before
    mean = np.mean(list(scores.values()))
    expected = sorted([*members, live["new_item"]], key=lambda i: -scores.get(i, mean))
    assert prior.expand([live["sid"]], 100) == expected and expected[-1] != live["new_item"]
    with pytest.raises(ValueError, match="item_order"):
        _channel(live, item_order="newest")


def test_a_failed_refresh_keeps_serving_the_current_version(live, tiny_codebook, tiny_log, tmp_path):
    channel = _channel(live)
    channel.refresh(live["v1"])
    served = channel._catalogue
    shuffled = with_quantizer(tiny_codebook, tiny_log.items)
    shuffled.codes[:] = shuffled.codes[::-1]  # same items, other SIDs
    shuffled.save(tmp_path / "other" / "codebook")
    for folder, message in ((tmp_path / "other", "not a later version"), (live["v0"], "missing")):
        with pytest.raises(ValueError, match=message):
            channel.refresh(folder)
        assert channel._catalogue is served


def test_refresh_under_concurrent_recalls_never_mixes_two_versions(live, monkeypatch):
    channel, request = _channel(live), live["request"]
    v0 = channel._catalogue
    alone = {id(v0): channel.recall(request["query"], request["history"], beam=3, max_items=1000)}
    used = {}
    real_generate = recall_module.generate_sids

    def generate_and_note_the_trie(model, tokenizer, prompts, trie, **kw):
        used[threading.get_ident()] = trie
        out = real_generate(model, tokenizer, prompts, trie, **kw)  # the beam searches run concurrently
        threading.Event().wait(0.002)  # widen the window in which a refresh can land mid-request
        return out

    monkeypatch.setattr(recall_module, "generate_sids", generate_and_note_the_trie)
    results, errors, stop = [], [], threading.Event()

    def client():
        try:
            while not stop.is_set():
                items = channel.recall(request["query"], request["history"], beam=3, max_items=1000)
                results.append((used[threading.get_ident()], items))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    snapshots = {id(v0.trie): v0}
    while len(results) < 3:
        threading.Event().wait(0.005)
    for _ in range(3):
        channel.refresh(live["v1"])
        snapshots[id(channel._catalogue.trie)] = channel._catalogue
        threading.Event().wait(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and len(results) >= 6
    latest = channel.recall(request["query"], request["history"], beam=3, max_items=1000)  # alone, on v1
    kinds = set()
    for trie, items in results:
        snapshot = snapshots[id(trie)]
        sids = [snapshot.codebook.sid_of(i) for i in items]
        # every item from one version: the one whose trie generated the clusters
        assert channel.expand(list(dict.fromkeys(sids)), 1000, snapshot) == items
        kinds.add(live["new_item"] in items)
        assert (live["new_item"] in items) == (snapshot is not v0)
        # concurrent beam searches on the one model answer exactly what a lone request gets
        assert items == alone.get(id(snapshot), latest)
    assert kinds == {False, True}
