"""A user's own SID method, loaded by dotted path (``user_quantiser:LeafRankQuantiser``) in the tests."""

import numpy as np

from eg_grpo.sid.methods import Quantised, SIDMethod


class LeafRankQuantiser(SIDMethod):
    """SID = (top-level category index, leaf index mod K, item row mod K): no model, no vectors needed."""

    needs_vectors = False

    def quantise(self, inputs):
        k = self.config.codebook_size
        paths = inputs.log.items["category_path"].map(tuple)
        tops = {t: i for i, t in enumerate(sorted({p[0] for p in paths}))}
        leaves = {p: i for i, p in enumerate(sorted(set(paths)))}
        codes = np.stack(
            [
                paths.map(lambda p: tops[p[0]] % k),
                paths.map(lambda p: leaves[p] % k),
                np.arange(len(paths)) % k,
            ],
            axis=1,
        ).astype(np.int64)
        return Quantised(codes, (k,) * 3, info={"category_guided": True})


class WrongShape(SIDMethod):
    needs_vectors = False

    def quantise(self, inputs):
        return Quantised(np.zeros((3, 3), dtype=np.int64), (4, 4, 4))


class NotAMethod:
    pass
