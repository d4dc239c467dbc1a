import numpy as np
import pandas as pd
import pytest

from eg_grpo.sid.encoders import TextEncoder, item_texts, load_item_vectors


def test_default_encoder_embeds_meaning(encoder):
    v = encoder.encode(
        ["red running shoes", "red sneakers for running", "stainless steel frying pan"], show_progress=False
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # the real model, not noise


def test_cache_is_reused_and_keyed_by_texts(tmp_path, encoder):
    enc = TextEncoder("default", cache_dir=tmp_path)
    texts = ["blue kettle", "green garden hose", "blue kettle"]
    first = enc.encode(texts, show_progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_allclose(first[0], first[2])  # duplicates encoded once, same vector
    cold = TextEncoder("default", cache_dir=tmp_path)
    cold._load = lambda: (_ for _ in ()).throw(AssertionError("model loaded despite cache"))
    np.testing.assert_array_equal(cold.encode(texts, show_progress=False), first)
    enc.encode(["another text"], show_progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_item_texts_use_title_brand_category_and_reject_empty():
    items = pd.DataFrame(
        {
            "item_id": [1, 2],
            "title": ["Red kettle", ""],
            "brand": ["Hearth", ""],
            "category_path": [["Kitchen", "Kettles"], []],
            "price": [1.0, 2.0],
            "description": ["", "a description only"],
        }
    )
    texts = item_texts(items)
    assert "Red kettle" in texts[0] and "Hearth" in texts[0] and "Kitchen > Kettles" in texts[0]
    assert texts[1] == "a description only"
    items.loc[1, "description"] = " "
    with pytest.raises(ValueError, match=r"neither a title nor a description.*\[2\]"):
        item_texts(items)


def test_vectors_file_row_count_must_match(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(0).normal(size=(5, 8)))
    assert np.allclose(np.linalg.norm(load_item_vectors(path, 5), axis=1), 1)
    with pytest.raises(ValueError, match="5 rows but the items table has 6"):
        load_item_vectors(path, 6)


def test_npz_lookup_encoder(tmp_path):
    path = tmp_path / "table.npz"
    np.savez(path, texts=np.array(["a", "b"]), vectors=np.array([[3.0, 4.0], [0.0, 2.0]]))
    enc = TextEncoder(str(path))
    np.testing.assert_allclose(enc.encode(["b", "a"]), [[0, 1], [0.6, 0.8]])
    with pytest.raises(KeyError, match="not in the vectors table"):
        enc.encode(["c"])
