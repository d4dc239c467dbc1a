"""The add_items stage and SID lineage across versions (eg_grpo.stages.add_items, eg_grpo.io.check_lineage)."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from live_catalogue import new_items_like, one_hot_vectors, with_quantizer, write_sid_version

from eg_grpo.data.sft_dataset import check_codebook_matches
from eg_grpo.decoding import SIDTrie, sid_token_ids_from_codes
from eg_grpo.io import check_lineage, read_stage, stage_record, write_stage
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.stages.__main__ import main as stages_main
from eg_grpo.stages.add_items import AddItemsArguments, run


@pytest.fixture(scope="module")
def base(tiny_log, tiny_codebook, tiny_data_dir, tmp_path_factory):
    """The first SID version (taxonomy SIDs + one-hot frozen model) as a ``sids`` stage folder."""
    book = with_quantizer(tiny_codebook, tiny_log.items)
    return write_sid_version(book, tmp_path_factory.mktemp("live") / "v0", tiny_data_dir)


def _load(folder):
    return SIDCodebook.load(folder / "codebook")


def _write_new(tmp_path, items, codes, sizes, name="new"):
    items.to_parquet(tmp_path / f"{name}.parquet", index=False)
    np.save(tmp_path / f"{name}.npy", one_hot_vectors(codes, sizes))
    return tmp_path / f"{name}.parquet", tmp_path / f"{name}.npy"


def _add(parent, items_path, vectors_path, out, **kw):
    args = AddItemsArguments(sid_dir=str(parent), new_items=str(items_path), new_item_vectors=str(vectors_path),
                             output_dir=str(out), **kw)  # fmt: skip
    return run(args)


def _tree(root):
    """Every file under ``root`` with its bytes' hash: equal before and after means the disk is unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def _unused_sid(book):
    """A SID under an existing two-level prefix whose last code holds no item."""
    used = set(map(tuple, book.codes.tolist()))
    prefix = tuple(book.codes[0, :2].tolist())
    last = next(c for c in range(book.codebook_sizes[2]) if (*prefix, c) not in used)
    return (*prefix, last)


def test_new_items_join_their_clusters_and_old_items_keep_their_sids(base, tiny_log, tmp_path, capsys):
    parent = _load(base)
    sources = parent.item_ids[:3]
    new = new_items_like(tiny_log.items, sources, 10_000)
    target = np.concatenate([parent.sids_of(sources), [_unused_sid(parent)]])
    new = pd.concat([new, new_items_like(tiny_log.items, sources[:1], 10_003, "fresh")], ignore_index=True)
    report = _add(base, *_write_new(tmp_path, new, target, parent.codebook_sizes), tmp_path / "v1")
    child = _load(tmp_path / "v1")
    # every old item keeps its SID, in the parent's order; each new item is in exactly one SID: the chosen one
    np.testing.assert_array_equal(child.item_ids[: len(parent.item_ids)], parent.item_ids)
    np.testing.assert_array_equal(child.codes[: len(parent.item_ids)], parent.codes)
    np.testing.assert_array_equal(child.sids_of(new["item_id"]), target)
    assert (
        sum(int(i) in child.items_of(s).tolist() for s in child.valid_sids().tolist() for i in new["item_id"])
        == 4
    )
    assert (report["joined"], report["opened"], report["overflow"]) == (3, 1, 0)
    assert report["new_sids"] == 1 and report["items"] == len(parent.item_ids) + 4
    sizes = {tuple(c["sid"]): (c["before"], c["after"]) for c in report["clusters"]}
    assert sizes[tuple(target[3])] == (0, 1)
    assert sizes[tuple(target[0])][1] == sizes[tuple(target[0])][0] + 1
    assert json.loads((tmp_path / "v1" / "add_items_report.json").read_text())["joined"] == 3
    assert "3 joined an existing SID, 1 opened a new one" in capsys.readouterr().out
    placements = pd.read_parquet(tmp_path / "v1" / "placements.parquet")
    assert placements["outcome"].tolist() == ["joined"] * 3 + ["opened"]
    # stage.json names the parent; the new version's trie accepts exactly its valid SIDs
    record = read_stage(tmp_path / "v1")
    assert record["inputs"]["parent"]["fingerprint"] == read_stage(base)["fingerprint"]
    assert record["lineage"]["ancestors"] == [read_stage(base)["fingerprint"]]
    offsets = np.cumsum([0, *child.codebook_sizes])
    levels = [np.arange(k) + o for k, o in zip(child.codebook_sizes, offsets)]
    eos = int(offsets[-1])
    trie = SIDTrie.from_sid_token_ids(sid_token_ids_from_codes(child.valid_sids(), levels, eos), eos + 1)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in child.codebook_sizes], indexing="ij"), -1).reshape(
        -1, 3
    )
    accepted = trie.contains(sid_token_ids_from_codes(grid, levels, eos)).numpy()
    valid = {tuple(s) for s in child.valid_sids().tolist()}
    assert {tuple(s) for s in grid[accepted].tolist()} == valid
    assert tuple(target[3]) in valid and tuple(target[3]) not in {
        tuple(s) for s in parent.valid_sids().tolist()
    }


def test_a_full_cluster_keeps_its_items_and_sends_the_overflow_to_a_free_last_level_code(
    tiny_log, tiny_codebook, tiny_data_dir, tmp_path
):
    k = max(tiny_codebook.codebook_sizes)
    book = with_quantizer(tiny_codebook, tiny_log.items, sizes=(k, k, k), max_cluster_size=3)
    parent = write_sid_version(book, tmp_path / "v0", tiny_data_dir)
    sid = tuple(book.codes[0].tolist())
    before = len(book.items_of(sid))
    new = new_items_like(tiny_log.items, [book.item_ids[0]] * 5, 20_000)
    report = _add(parent, *_write_new(tmp_path, new, [sid] * 5, book.codebook_sizes), tmp_path / "v1")
    child = _load(tmp_path / "v1")
    np.testing.assert_array_equal(child.codes[: len(book.item_ids)], book.codes)  # old items never move
    assert len(child.items_of(sid)) == 3 and set(book.items_of(sid)) <= set(child.items_of(sid))
    moved = child.sids_of(new["item_id"])
    moved = moved[(moved != sid).any(1)]
    assert report["overflow"] == len(moved) == 5 - (3 - before)
    assert (moved[:, :2] == sid[:2]).all()  # a free code of the last level, beside the full cluster
    assert not any(len(book.items_of(tuple(s))) for s in moved.tolist())
    assert all(
        len(child.items_of(tuple(s))) <= 3 for s in child.valid_sids().tolist() if s[:2] == list(sid[:2])
    )


def test_unknown_category_is_an_error_unless_all_codes(base, tiny_log, tmp_path):
    parent = _load(base)
    new = new_items_like(tiny_log.items, parent.item_ids[:2], 30_000)
    new["category_path"] = [["Launched Category", "x"], list(new["category_path"][1])]
    paths = _write_new(tmp_path, new, parent.sids_of(parent.item_ids[:2]), parent.codebook_sizes)
    with pytest.raises(ValueError, match="Launched Category"):
        _add(base, *paths, tmp_path / "v1")
    assert not (tmp_path / "v1").exists()
    report = _add(base, *paths, tmp_path / "v1", unknown_category="all_codes")
    assert report["new_items"] == 2 and len(_load(tmp_path / "v1").item_ids) == len(parent.item_ids) + 2


def test_an_id_repeated_with_the_same_content_is_skipped(base, tiny_log, tmp_path):
    parent = _load(base)
    same = tiny_log.items[tiny_log.items["item_id"] == parent.item_ids[0]][["item_id", "title", "category_path",
                                                                            "brand", "price"]]  # fmt: skip
    new = pd.concat([same, new_items_like(tiny_log.items, parent.item_ids[:1], 40_000)], ignore_index=True)
    report = _add(base, *_write_new(tmp_path, new, parent.sids_of(parent.item_ids[[0, 0]]), parent.codebook_sizes),
                  tmp_path / "v1")  # fmt: skip
    assert report["repeated_items_skipped"] == 1 and report["new_items"] == 1


@pytest.mark.parametrize("problem", ["missing_column", "duplicate_ids", "changed_content", "reference_parent",
                                     "parent_without_record"])  # fmt: skip
def test_bad_input_is_a_clear_error_and_writes_nothing(
    problem, base, tiny_log, tiny_codebook, tiny_data_dir, tmp_path
):
    parent, parent_dir = _load(base), base
    new = new_items_like(tiny_log.items, parent.item_ids[:3], 50_000)
    message = {"missing_column": "brand", "duplicate_ids": "duplicate", "changed_content": "other content",
               "reference_parent": "without a frozen model", "parent_without_record": "stage.json"}[problem]  # fmt: skip
    if problem == "missing_column":
        new = new.drop(columns="brand")
    elif problem == "duplicate_ids":
        new.loc[2, "item_id"] = new.loc[1, "item_id"]
    elif problem == "changed_content":
        new.loc[0, "item_id"] = int(parent.item_ids[5])  # an id of the catalogue, another title
    elif problem == "reference_parent":
        parent_dir = write_sid_version(tiny_codebook, tmp_path / "reference", tiny_data_dir)
    else:
        parent_dir = tmp_path / "bare"
        parent.save(parent_dir / "codebook")
    paths = _write_new(tmp_path, new, parent.sids_of(parent.item_ids[:3]), parent.codebook_sizes)
    before, parent_before = _tree(tmp_path), _tree(base)
    with pytest.raises(ValueError, match=message):
        _add(parent_dir, *paths, tmp_path / "out")
    assert _tree(tmp_path) == before and _tree(base) == parent_before and not (tmp_path / "out").exists()
    # the command line says the same, with exit code 2
    argv = ["add_items", "--sid_dir", parent_dir, "--new_items", paths[0], "--new_item_vectors", paths[1],
            "--output_dir", tmp_path / "out"]  # fmt: skip
    assert stages_main([str(a) for a in argv]) == 2 and _tree(tmp_path) == before


def test_a_write_killed_midway_leaves_the_previous_version_intact(base, tiny_log, tmp_path, monkeypatch):
    parent = _load(base)
    new = new_items_like(tiny_log.items, parent.item_ids[:2], 60_000)
    _add(
        base,
        *_write_new(tmp_path, new, parent.sids_of(parent.item_ids[:2]), parent.codebook_sizes),
        tmp_path / "v1",
    )
    more = new_items_like(tiny_log.items, parent.item_ids[2:4], 60_100)
    paths = _write_new(tmp_path, more, parent.sids_of(parent.item_ids[2:4]), parent.codebook_sizes, "more")
    _add(tmp_path / "v1", *paths, tmp_path / "v2")
    before = _tree(tmp_path)
    other = new_items_like(tiny_log.items, parent.item_ids[4:6], 60_200)
    paths = _write_new(tmp_path, other, parent.sids_of(parent.item_ids[4:6]), parent.codebook_sizes, "other")
    before = {**before, **{k: v for k, v in _tree(tmp_path).items() if k.startswith("other")}}
    real_save = SIDCodebook.save

    def save_then_die(self, directory):
        real_save(self, directory)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(SIDCodebook, "save", save_then_die)
    for out in (tmp_path / "v3", tmp_path / "v2"):  # a new folder, and replacing a finished version
        with pytest.raises(KeyboardInterrupt):
            _add(tmp_path / "v1", *paths, out, overwrite=True)
    assert _tree(tmp_path) == before and not (tmp_path / "v3").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left behind


def _model_trained_on(sid_dir, folder):
    write_stage(folder, stage_record("sft", {"model": "tiny"}, {"sids": sid_dir}))
    return folder


def test_lineage_accepts_descendants_and_refuses_an_unrelated_folder_of_the_same_size(
    base, tiny_log, tiny_codebook, tiny_data_dir, tmp_path
):
    parent = _load(base)
    model = _model_trained_on(base, tmp_path / "model")
    new = new_items_like(tiny_log.items, parent.item_ids[:2], 70_000)
    _add(
        base,
        *_write_new(tmp_path, new, parent.sids_of(parent.item_ids[:2]), parent.codebook_sizes),
        tmp_path / "v1",
    )
    more = new_items_like(tiny_log.items, parent.item_ids[2:3], 70_100)
    paths = _write_new(tmp_path, more, parent.sids_of(parent.item_ids[2:3]), parent.codebook_sizes, "more")
    _add(tmp_path / "v1", *paths, tmp_path / "v2")
    for version in ("v1", "v2"):  # a child and a grandchild: same model, same data
        check_lineage(data_dir=tiny_data_dir, sid_dir=tmp_path / version, model_dir=model)
    assert read_stage(tmp_path / "v2")["lineage"]["ancestors"][1] == read_stage(base)["fingerprint"]
    check_codebook_matches(
        tiny_log, _load(tmp_path / "v2")
    )  # evaluation on the old data: added items allowed
    # the same items, other SIDs, same size: refused
    shuffled = np.random.default_rng(0).permutation(len(parent.item_ids))
    other = SIDCodebook(parent.codebook_sizes, parent.item_ids, parent.codes[shuffled], "rqkmeans",
                        parent.quantizer, "none", None, {}, parent.config)  # fmt: skip
    write_sid_version(other, tmp_path / "unrelated", tiny_data_dir, shuffled=True)
    with pytest.raises(ValueError, match="trained with other SIDs"):
        check_lineage(sid_dir=tmp_path / "unrelated", model_dir=model)
    # a folder that claims the parent in its lineage but moved an old item: refused
    forged = tmp_path / "forged"
    other.save(forged / "codebook")
    write_stage(forged, read_stage(tmp_path / "v1"), lineage=read_stage(tmp_path / "v1")["lineage"])
    with pytest.raises(ValueError, match="does not keep its SIDs"):
        check_lineage(sid_dir=forged, model_dir=model)
    # a model trained on the child does not accept the parent (it lacks the new items)
    with pytest.raises(ValueError, match="trained with other SIDs"):
        check_lineage(sid_dir=base, model_dir=_model_trained_on(tmp_path / "v1", tmp_path / "model_v1"))
