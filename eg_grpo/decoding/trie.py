"""`SIDTrie`: the valid SIDs as a prefix trie stored in tensors, queried for a whole batch × beams at once.

Layout (a CSR transition table, as in STATIC, without Python objects):

- nodes are numbered breadth-first: the root is 0, then the depth-1 prefixes, the depth-2 prefixes, …,
  each depth in lexicographic order of its token ids; node ``k >= 1`` is reached by edge ``k - 1``;
- ``edge_keys[k] = parent(k + 1) * V + token(k + 1)`` is therefore sorted, so the child of
  ``(node, token)`` is one ``searchsorted`` away (``O(log E)`` per row, all rows in one call);
- ``indptr[n] : indptr[n + 1]`` is the contiguous slice of ``edge_tokens`` holding the children of an
  inner node ``n``;
- the end token after the last level is implicit (every complete SID continues with eos only), so
  the leaves cost nothing beyond their incoming edge.

A step of decoding walks ``t`` edges from the root (``t`` = tokens generated so far, ≤ L), then gathers
a fixed-width slice of ``edge_tokens`` (the largest fan-out at that depth, known at build time) —
no Python loop over rows and, on a GPU, no host synchronisation. The state is derived from the
tokens on every call, so beam reordering between steps needs no bookkeeping.

For 1M SIDs of 3 × 256 codes (1.07M edges, 16 bytes each) the tensors take about 17 MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEAD = -1  # node id of a prefix that is not in the trie


class SIDTrie:
    """The valid SIDs, as token-id sequences ``[tok_1, …, tok_L, eos]``, in a tensor trie.

    Supported: every SID has the same number of levels ``L`` (any ``L`` ≥ 1), followed by one end token;
    each level may use its own tokens and codebook size (e.g. 256, 256, 1024), and a token may even
    appear at several levels (the trie is keyed by full prefixes, never by per-level token sets).
    Variable-length SIDs are not supported (a clear error says so).

    Build with :meth:`from_sid_token_ids`; move with :meth:`to`; query with :meth:`allowed_tokens`
    (a boolean mask) or :meth:`allowed_token_ids` (the fixed-width id lists the logits processor uses).

    Attributes:
        num_levels: ``L``.
        num_sids: number of distinct SIDs.
        vocab_size: ``V``; token ids must be below it.
        eos_token_id: the end token every SID ends with.
        max_fanout: per depth ``0 … L-1``, the most children a prefix of that depth has.
    """

    def __init__(
        self, edge_keys, edge_tokens, indptr, num_levels, vocab_size, eos_token_id, max_fanout, num_sids
    ):
        self.edge_keys = edge_keys  # (E,) int64, sorted: parent * V + token
        self.edge_tokens = edge_tokens  # (E + 1,) int64: the token on each edge, then an eos sentinel
        self.indptr = indptr  # (N_inner + 1,) int64: children of inner node n are edges indptr[n]:indptr[n+1]
        self.num_levels = int(num_levels)
        self.vocab_size = int(vocab_size)
        self.eos_token_id = int(eos_token_id)
        self.max_fanout = tuple(int(f) for f in max_fanout)
        self.num_sids = int(num_sids)

    # ------------------------------------------------------------------------------------------
    # Building
    @classmethod
    def from_sid_token_ids(cls, seqs, vocab_size: int) -> SIDTrie:
        """Build the trie from SID token-id sequences.

        Args:
            seqs: ``S`` sequences ``[tok_1, …, tok_L, eos]`` (a list of lists, an ``(S, L + 1)`` array or
                tensor), e.g. ``SIDCodebook.sid_token_ids(vocab)``. Duplicates are merged.
            vocab_size: width of the model's logits (``model.get_output_embeddings().weight.shape[0]``);
                every token id must be below it.

        Returns:
            The trie, on the CPU.

        Raises:
            ValueError: when the sequences are empty, of different lengths, do not all end with the same
                end token, contain the end token before the end, or hold ids outside ``[0, vocab_size)``.
        """
        arr = _as_2d_int64(seqs)
        if arr.shape[1] < 2:
            raise ValueError(f"SID sequences must be L >= 1 tokens plus eos; got length {arr.shape[1]}")
        eos = int(arr[0, -1])
        if not (arr[:, -1] == eos).all():
            bad = int(np.flatnonzero(arr[:, -1] != eos)[0])
            raise ValueError(
                f"SID sequence {bad} ends with {int(arr[bad, -1])}, not the eos {eos} of sequence 0"
            )
        body = np.ascontiguousarray(arr[:, :-1])  # (S, L)
        if (body == eos).any():
            raise ValueError(f"the end token {eos} appears inside a SID; each SID is L tokens then eos")
        if arr.min() < 0 or arr.max() >= vocab_size:
            raise ValueError(
                f"token ids must lie in [0, vocab_size={vocab_size}); got [{arr.min()}, {arr.max()}]"
            )
        num_levels = body.shape[1]

        # Lexicographic order, then drop duplicate rows.
        order = np.lexsort(body.T[::-1])
        body = body[order]
        new_row = np.ones(len(body), dtype=bool)
        new_row[1:] = (body[1:] != body[:-1]).any(axis=1)
        body = body[new_row]  # (S', L), sorted, unique

        # A row starts a new depth-(d+1) node where any of its first d+1 tokens differs from the row above.
        differs = np.ones_like(body, dtype=bool)
        differs[1:] = body[1:] != body[:-1]
        starts_node = np.cumsum(differs, axis=1) > 0  # (S', L)
        parent = np.zeros(len(body), dtype=np.int64)  # each row's depth-d node (the root for d = 0)
        base_prev, n_prev, next_id = 0, 1, 1  # id range of the depth-d nodes; the next free id
        keys, tokens, child_counts, fanout = [], [], [], []
        for d in range(num_levels):  # a loop over levels (L of them), vectorised over SIDs
            starts = starts_node[:, d]
            node_parent, node_token = parent[starts], body[starts, d]  # (n_{d+1},) each
            keys.append(node_parent * vocab_size + node_token)
            tokens.append(node_token)
            counts = np.bincount(node_parent - base_prev, minlength=n_prev)  # children of each depth-d node
            child_counts.append(counts)
            fanout.append(int(counts.max()))
            parent = next_id + np.cumsum(starts) - 1
            base_prev, n_prev, next_id = next_id, len(node_token), next_id + len(node_token)
        edge_keys = np.concatenate(keys)
        if not (np.diff(edge_keys) > 0).all():  # guaranteed by construction; cheap insurance
            raise AssertionError("trie edge keys are not strictly sorted")
        child_counts = np.concatenate(child_counts)  # (N_inner,): nodes of depth 0..L-1, in id order
        indptr = np.zeros(len(child_counts) + 1, dtype=np.int64)
        np.cumsum(child_counts, out=indptr[1:])
        return cls(
            edge_keys=torch.from_numpy(edge_keys),
            # The tokens on the edges, then one eos: the sentinel that invalid prefixes read.
            edge_tokens=torch.from_numpy(np.concatenate(tokens + [np.array([eos])]).astype(np.int64)),
            indptr=torch.from_numpy(indptr),
            num_levels=num_levels,
            vocab_size=vocab_size,
            eos_token_id=eos,
            max_fanout=fanout,
            num_sids=len(body),
        )

    # ------------------------------------------------------------------------------------------
    # Device and size
    @property
    def device(self) -> torch.device:
        return self.edge_keys.device

    def to(self, device) -> SIDTrie:
        """A copy on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return SIDTrie(
            self.edge_keys.to(device), self.edge_tokens.to(device), self.indptr.to(device), self.num_levels,
            self.vocab_size, self.eos_token_id, self.max_fanout, self.num_sids,
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes held by the trie's tensors."""
        return sum(t.numel() * t.element_size() for t in (self.edge_keys, self.edge_tokens, self.indptr))

    def __repr__(self) -> str:
        return (f"SIDTrie(num_sids={self.num_sids}, num_levels={self.num_levels}, vocab_size={self.vocab_size}, "
                f"max_fanout={self.max_fanout}, {self.nbytes / 2**20:.1f} MiB on {self.device})")  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Queries
    def walk(self, generated: torch.Tensor) -> torch.Tensor:
        """The trie node reached by each row's tokens (``DEAD`` = -1 when the prefix is not in the trie).

        Args:
            generated: ``(rows, t)`` token ids, ``t <= L``, on the trie's device.

        Returns:
            ``(rows,)`` int64 node ids.
        """
        rows, t = generated.shape
        if t > self.num_levels:
            raise ValueError(f"walk() takes at most L={self.num_levels} tokens; got {t}")
        node = torch.zeros(rows, dtype=torch.long, device=generated.device)
        for j in range(t):  # t <= L: a loop over depth, never over rows
            token = generated[:, j].long()
            query = node * self.vocab_size + token  # (rows,)
            pos = torch.searchsorted(self.edge_keys, query).clamp_(max=len(self.edge_keys) - 1)
            found = (self.edge_keys[pos] == query) & (node != DEAD) & (token >= 0) & (token < self.vocab_size)
            node = torch.where(found, pos + 1, torch.full_like(pos, DEAD))
        return node

    def allowed_token_ids(self, generated: torch.Tensor, pad_token_id: int | None = None):
        """For each row, the tokens allowed next, as fixed-width id lists (padded with duplicates).

        - a valid prefix of ``t < L`` tokens: its children in the trie;
        - a complete SID (``t == L``): the end token only;
        - after a complete SID and its end token (``t > L``): the end and pad tokens, so finished rows
          stay finished;
        - an invalid prefix (impossible when every token came through the processor), an end token
          before the last level included: the end token only, so decoding stops instead of running
          unconstrained (a known failure of prefix-function tries).

        Args:
            generated: ``(rows, t)`` token ids produced after the prompt, on the trie's device.
            pad_token_id: the pad token, allowed after the end token (default: the end token).

        Returns:
            ``(ids, invalid)``: ``ids`` ``(rows, W)`` int64 allowed token ids (a row's unused slots repeat
            one of its allowed ids, so scattering them is idempotent; never empty), and ``invalid``
            ``(rows,)`` bool marking invalid prefixes.
        """
        rows, t = generated.shape
        device = generated.device
        L, eos = self.num_levels, self.eos_token_id
        node = self.walk(generated[:, :L])  # (rows,)
        invalid = node == DEAD
        ids = torch.full((rows, 2), eos, dtype=torch.long, device=device)  # what rows at t >= L may produce
        if t > L:
            invalid |= generated[:, L] != eos
            pad = eos if pad_token_id is None else int(pad_token_id)
            ids[:, 1] = torch.where(invalid, ids[:, 1], torch.full_like(ids[:, 1], pad))
            return ids, invalid
        if t == L:
            return ids, invalid
        width = self.max_fanout[t]
        offset = torch.arange(width, device=device)  # (W,)
        if t == 0:  # every row is at the root: one slice, broadcast
            return self.edge_tokens[:width].expand(rows, width), invalid
        # A row's children are edge_tokens[lo:hi]; an invalid row reads the eos sentinel after the last
        # edge. Slots past a row's fan-out repeat its last child (keeps the scatter idempotent).
        sentinel = len(self.edge_tokens) - 1
        safe = node.clamp(min=0)
        lo = torch.where(invalid, sentinel, self.indptr[safe])  # (rows,)
        last = torch.where(invalid, sentinel, self.indptr[safe + 1] - 1)  # (rows,)
        slot = torch.minimum(lo[:, None] + offset[None, :], last[:, None])  # (rows, W)
        return torch.take(self.edge_tokens, slot), invalid

    def allowed_tokens(self, generated: torch.Tensor, pad_token_id: int | None = None) -> torch.Tensor:
        """Boolean mask ``(rows, V)`` of the tokens allowed after each row's ``generated`` prefix.

        See :meth:`allowed_token_ids` for the rules; every row has at least one allowed token.
        """
        ids, _ = self.allowed_token_ids(generated.to(self.device), pad_token_id)
        mask = torch.zeros(len(ids), self.vocab_size, dtype=torch.bool, device=self.device)
        return mask.scatter_(1, ids, True)

    def contains(self, seqs) -> torch.Tensor:
        """Whether each ``[tok_1, …, tok_L, eos]`` sequence (extra trailing eos/pad ignored) is a valid SID.

        Args:
            seqs: ``(rows, >= L + 1)`` token ids (tensor, array or list of equal-length lists).

        Returns:
            ``(rows,)`` bool tensor on the trie's device.
        """
        arr = torch.as_tensor(
            np.asarray(seqs) if not isinstance(seqs, torch.Tensor) else seqs, device=self.device
        )
        if arr.ndim != 2 or arr.shape[1] < self.num_levels + 1:
            return torch.zeros(len(arr), dtype=torch.bool, device=self.device)
        node = self.walk(arr[:, : self.num_levels])
        return (node != DEAD) & (arr[:, self.num_levels] == self.eos_token_id)


def _as_2d_int64(seqs) -> np.ndarray:
    if isinstance(seqs, torch.Tensor):
        arr = seqs.detach().cpu().numpy()
    elif isinstance(seqs, np.ndarray):
        arr = seqs
    else:
        seqs = list(seqs)
        if not seqs:
            raise ValueError("no SIDs given; the trie needs at least one valid SID")
        lengths = {len(s) for s in seqs}
        if len(lengths) != 1:
            raise ValueError(
                f"SIDs of different lengths {sorted(lengths)}: all SIDs must have L tokens plus eos"
            )
        arr = np.asarray(seqs)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError(f"expected S >= 1 SID sequences of equal length, got an array of shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def sid_token_ids_from_codes(
    codes: np.ndarray, level_token_ids: Sequence[np.ndarray], eos_token_id: int
) -> np.ndarray:
    """``(S, L)`` codes → ``(S, L + 1)`` token ids ending with eos, vectorised (for big catalogues).

    Args:
        codes: ``(S, L)`` integer codes.
        level_token_ids: per level, the token id of each code (``SIDVocab.level_token_ids``).
        eos_token_id: the end token.
    """
    codes = np.asarray(codes, dtype=np.int64)
    out = np.empty((len(codes), codes.shape[1] + 1), dtype=np.int64)
    for level in range(codes.shape[1]):
        out[:, level] = np.asarray(level_token_ids[level])[codes[:, level]]
    out[:, -1] = eos_token_id
    return out
