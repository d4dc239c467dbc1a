"""A live catalogue at scale: new items into a large SID version, and a running channel's refresh; prints JSON.

    python benchmarks/add_items.py                                   # 100k new items into 1M
    python benchmarks/add_items.py --num_items 100000 --num_new 10000   # quick

The parent is a synthetic CQ-SID-shaped codebook: ``--levels`` x ``--codebook_size`` codes, a frozen
model without an encoder MLP (latent = vector, ``--dim``-d), level 1 sliced among 20 top-level
categories, items drawn around ``--num_clusters`` centres and quantised by the model itself (the
SID training is not what is measured). Timed:

- ``extend_seconds``: :func:`eg_grpo.sid.add_items.extend_codebook` (placement with the frozen
  model, the cluster cap at ``--max_cluster_size``, the child codebook's indexes);
- ``trie_seconds``: the child's decoding trie from its valid SIDs (vectorised token ids);
- ``save_seconds`` / ``refresh_seconds``: writing the new version, and :meth:`RecallChannel.refresh`
  of a running channel (load, check that every served item kept its SID, trie, item -> SID map);
  the channel's model is a stub (an output head only): refresh never runs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eg_grpo.decoding import SIDTrie, sid_token_ids_from_codes
from eg_grpo.eval.recall import RecallChannel
from eg_grpo.sid.add_items import extend_codebook
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.rqvae import FrozenQuantizer


class _StubVocab:
    """What the channel needs from ``SIDVocab``: sizes and one token per (level, code), then eos."""

    def __init__(self, sizes):
        self.codebook_sizes = tuple(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.eos_token_id = int(self.offsets[-1])

    def encode(self, sid, add_eos: bool = True):
        ids = [int(self.offsets[level] + c) for level, c in enumerate(sid)]
        return ids + [self.eos_token_id] if add_eos else ids


class _StubModel(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.head = torch.nn.Linear(1, width, bias=False)

    def get_output_embeddings(self):
        return self.head


def synthetic_parent(args, rng):
    sizes = (args.codebook_size,) * args.levels
    centres = rng.normal(size=(args.num_clusters, args.dim)).astype(np.float32)
    books = [torch.as_tensor(centres[rng.choice(args.num_clusters, args.codebook_size, replace=False)])]
    for level in range(1, args.levels):
        books.append(
            torch.as_tensor(
                rng.normal(scale=0.5 / level, size=(args.codebook_size, args.dim)), dtype=torch.float32
            )
        )
    step = args.codebook_size // 20
    slices = {f"top{t}": (t * step, (t + 1) * step) for t in range(20)}
    quantizer = FrozenQuantizer(None, books, slices)

    def items(n, first_id):
        rows = rng.integers(args.num_clusters, size=n)
        vectors = centres[rows] + rng.normal(scale=0.3, size=(n, args.dim)).astype(np.float32)
        table = pd.DataFrame({"item_id": np.arange(first_id, first_id + n), "title": "item", "brand": "b",
                              "price": 1.0, "category_path": [[f"top{r % 20}", "leaf"] for r in rows]})  # fmt: skip
        return table, vectors

    old, old_vectors = items(args.num_items, 0)
    codes, _ = quantizer.codes(old_vectors, old["category_path"].map(lambda p: p[0]).to_numpy())
    config = {"max_cluster_size": args.max_cluster_size}
    book = SIDCodebook(sizes, old["item_id"].to_numpy(), codes, "cq_sid", quantizer, "none", None, {}, config)
    return book, items(args.num_new, args.num_items)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=1_000_000)
    parser.add_argument("--num_new", type=int, default=100_000)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook_size", type=int, default=256)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--num_clusters", type=int, default=2000)
    parser.add_argument("--max_cluster_size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    parent, (new_items, new_vectors) = synthetic_parent(args, rng)
    setup = time.perf_counter() - start

    start = time.perf_counter()
    child, placement = extend_codebook(parent, new_items, new_vectors)
    extend = time.perf_counter() - start

    vocab = _StubVocab(parent.codebook_sizes)
    levels = [np.arange(k) + o for k, o in zip(vocab.codebook_sizes, vocab.offsets)]
    start = time.perf_counter()
    valid = child.valid_sids()
    SIDTrie.from_sid_token_ids(
        sid_token_ids_from_codes(valid, levels, vocab.eos_token_id), vocab.eos_token_id + 1
    )
    trie = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        child.save(Path(tmp) / "codebook")
        save = time.perf_counter() - start
        channel = RecallChannel.__new__(RecallChannel)
        channel.model, channel.vocab, channel.model_dir = _StubModel(vocab.eos_token_id + 1), vocab, None
        channel._refresh_lock = __import__("threading").Lock()
        channel._catalogue = channel._build_catalogue(parent, None, "clicks", None)
        start = time.perf_counter()
        channel.refresh(tmp)
        refresh = time.perf_counter() - start
    summary = placement.summary()
    print(json.dumps({
        "parent_items": args.num_items, "new_items": args.num_new, "levels": args.levels,
        "codebook_size": args.codebook_size, "max_cluster_size": args.max_cluster_size,
        "joined": summary["joined"], "opened": summary["opened"], "overflow": summary["overflow"],
        "valid_sids_after": len(valid), "setup_seconds": round(setup, 2), "extend_seconds": round(extend, 2),
        "new_items_per_second": round(args.num_new / extend), "trie_seconds": round(trie, 2),
        "save_seconds": round(save, 2), "refresh_seconds": round(refresh, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
