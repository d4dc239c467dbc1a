import numpy as np
import pytest
from conftest import tiny_config

from eg_grpo.sid.build import build_codebook
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.constraints import top_level_categories
from eg_grpo.sid.split import sid_keys
from eg_grpo.sid.tokens import SIDVocab, all_sid_tokens


@pytest.fixture(scope="module")
def built(syn_log, syn_vectors, encoder):
    # items encoded by the build (a cache hit on the syn_vectors texts), so `assign` may encode too
    return build_codebook(syn_log, tiny_config(), encoder=encoder, show_progress=False)


def test_maps_are_consistent(built, syn_log):
    book, _ = built
    assert book.codes.shape == (len(syn_log.items), 3)
    valid = book.valid_sids()
    assert len(valid) == len({tuple(r) for r in book.codes.tolist()})
    total = 0
    for sid in valid.tolist():
        members = book.items_of(sid)
        total += len(members)
        assert all(book.sid_of(int(i)) == tuple(sid) for i in members)
        assert book.contains(sid)
    assert total == len(book.item_ids)
    assert len(book.items_of((15, 15, 15))) == 0 or book.contains((15, 15, 15))
    with pytest.raises(KeyError, match="not in the codebook"):
        book.sid_of(-1)


def test_sid_token_ids_end_with_eos(built):
    book, _ = built

    class Tok:  # the three methods SIDVocab reads
        eos_token_id = 0
        vocab = {t: i + 1 for i, t in enumerate(all_sid_tokens((16, 16, 16)))}

        def get_vocab(self):
            return self.vocab

        def __len__(self):
            return len(self.vocab) + 1

    vocab = SIDVocab(Tok(), (16, 16, 16))
    seqs = book.sid_token_ids(vocab)
    assert len(seqs) == len(book.valid_sids())
    assert all(len(s) == 4 and s[-1] == 0 for s in seqs)
    assert vocab.decode(seqs[0]) == tuple(book.valid_sids()[0])


def test_save_load_roundtrip_and_assign(built, syn_log, syn_vectors, tmp_path):
    book, _ = built
    book.save(tmp_path / "cb")
    loaded = SIDCodebook.load(tmp_path / "cb")
    np.testing.assert_array_equal(loaded.codes, book.codes)
    np.testing.assert_array_equal(loaded.item_ids, book.item_ids)
    assert loaded.category_slices == book.category_slices and loaded.codebook_sizes == (16, 16, 16)
    tops = top_level_categories(syn_log.items)
    again = loaded.assign_vectors(syn_vectors, tops)
    np.testing.assert_array_equal(again, book.assign_vectors(syn_vectors, tops))
    # the frozen model reproduces every item's SID, except inside split clusters where the
    # balanced partition and nearest-part routing may disagree at the last level
    split_rows = (
        np.isin(sid_keys(again, 16), sid_keys(np.concatenate([s for _, s in book.splits.values()]), 16))
        if book.splits
        else np.zeros(len(again), bool)
    )
    np.testing.assert_array_equal(again[~split_rows], book.codes[~split_rows])
    assert (again == book.codes).all(1).mean() > 0.9


def test_assign_new_items_from_text_respects_categories(built, syn_log):
    book, _ = built
    new = syn_log.items.head(6).copy()
    new["item_id"] = new["item_id"] + 10_000
    sids = book.assign(new)  # encodes with the stored default encoder
    np.testing.assert_array_equal(sids, book.sids_of(syn_log.items.head(6)["item_id"]))
    # an electronics title filed under Garden gets a Garden level-1 code
    new["category_path"] = [["Garden"]] * 6
    lo, hi = book.category_slices["Garden"]
    assert ((book.assign(new)[:, 0] >= lo) & (book.assign(new)[:, 0] < hi)).all()
    new["category_path"] = [["Toys"]] * 6
    with pytest.raises(KeyError, match="without level-1 codes"):
        book.assign(new)
    assert book.assign(new, unknown_category="all_codes").shape == (6, 3)
    dup = syn_log.items.head(2).copy()
    dup["item_id"] = 5
    with pytest.raises(ValueError, match="duplicate item ids"):
        book.assign(dup)
