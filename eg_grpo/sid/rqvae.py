"""RQ-VAE over item text vectors, with the optional CQ constraints, and its frozen form.

An encoder MLP maps a text vector ``(D,)`` to a unit-norm latent ``(d,)``; ``L`` codebooks of
``K`` codes quantise it residually; a decoder MLP reconstructs the vector from the sum of the
chosen codewords. Loss = reconstruction squared error + per-level VQ loss (codebook term +
``beta`` x commitment term, straight-through gradients) + optionally ``contrastive_weight`` x the
query terms of :mod:`eg_grpo.sid.constraints` (in-batch InfoNCE + code-level alignment).
Codebooks start from residual k-means on the initial latents; codes unused in an epoch are
revived at random residuals (level 1: random items of the code's own category) until the last
fifth of training, and the learning rate decays (cosine) so that codes and encoder settle.

:class:`FrozenQuantizer` is what a codebook keeps for assigning new items: the encoder MLP (or
none, for RQ-KMeans), the codebooks and the level-1 category slices.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eg_grpo.sid.constraints import code_alignment, info_nce
from eg_grpo.sid.rqkmeans import fit_residual_kmeans, nearest, residual_quantize, slices_per_row

logger = logging.getLogger(__name__)


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class L2Normalize(nn.Module):
    """Puts latents on the unit sphere.

    Why: the contrastive terms score squared distances, and with a free latent scale they win by
    inflating it (seen: latent norms 0.3 -> 5.7 during training, with the codes lagging behind
    and the SIDs of the final epoch unstable). On the sphere the scale is fixed and the logits
    are bounded by ``4 / temperature``.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1)


def encoder_mlp(dims: list[int]) -> nn.Sequential:
    """The RQ-VAE encoder: :func:`mlp` followed by :class:`L2Normalize` (no parameters)."""
    return nn.Sequential(*mlp(dims), L2Normalize())


class RQVAE(nn.Module):
    """Residual-quantised autoencoder.

    Args:
        in_dim: text-vector size ``D``.
        hidden: encoder hidden sizes (the decoder mirrors them).
        latent_dim: ``d``.
        levels: ``L``.
        codebook_size: ``K``.
    """

    def __init__(self, in_dim: int, hidden: list[int], latent_dim: int, levels: int, codebook_size: int):
        super().__init__()
        self.encoder = encoder_mlp([in_dim, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(codebook_size, latent_dim) * 0.01) for _ in range(levels)]
        )

    def quantize_st(
        self, z: torch.Tensor, lo=None, hi=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantisation with straight-through gradients.

        Returns:
            ``(z_q_st (b, d), codes (b, L), vq_loss_terms (2,))``: the quantised latent whose
            gradient flows to ``z``; codes; summed codebook and commitment MSE terms.
        """
        residual, quantised = z, torch.zeros_like(z)
        codes, cb_loss, commit = [], z.new_zeros(()), z.new_zeros(())
        for level, cb in enumerate(self.codebooks):
            idx, _ = (
                nearest(residual.detach(), cb.detach(), lo, hi)
                if level == 0
                else nearest(residual.detach(), cb.detach())
            )
            chosen = cb[idx]  # (b, d), differentiable w.r.t. the codebook
            cb_loss = cb_loss + F.mse_loss(chosen, residual.detach())
            commit = commit + F.mse_loss(residual, chosen.detach())
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(idx)
        z_q_st = z + (quantised - z).detach() + (quantised - quantised.detach())  # value = quantised
        return z_q_st, torch.stack(codes, 1), torch.stack([cb_loss, commit])


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    beta: float = 0.25
    kmeans_iters: int = 20
    contrastive_weight: float = 0.25
    temperature: float = 0.1
    code_alignment_weight: float = 1.0
    seed: int = 0
    device: str = "cpu"


def _batches(n: int, size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for s in range(0, n, size):
        yield perm[s : s + size]


@torch.no_grad()
def _revive_dead_codes(model: RQVAE, x, used: list[torch.Tensor], groups, slices, gen) -> int:
    """Moves codes unused this epoch onto random current residuals; returns how many moved."""
    sample = torch.randperm(x.shape[0], generator=gen)[:8192].to(x.device)
    z = model.encoder(x[sample])
    residual, revived = z, 0
    lo = hi = None
    if slices is not None:
        lo, hi = slices_per_row(groups[sample.cpu().numpy()], slices, x.device)
    for level, cb in enumerate(model.codebooks):
        dead = torch.nonzero(used[level] == 0).flatten()
        for code in dead.tolist():
            pool = torch.arange(len(sample), device=x.device)
            if level == 0 and lo is not None:  # only from the code's own category slice
                pool = pool[(lo <= code) & (hi > code)]
            if len(pool) == 0:
                continue
            pick = pool[torch.randint(len(pool), (1,), generator=gen).item()]
            cb.data[code] = residual[pick] + 1e-3 * torch.randn(cb.shape[1], generator=gen).to(x.device)
            revived += 1
        idx, _ = nearest(residual, cb, lo, hi) if level == 0 else nearest(residual, cb)
        residual = residual - cb[idx]
    return revived


def train_rqvae(
    x: np.ndarray,
    settings: TrainSettings,
    hidden: list[int],
    latent_dim: int,
    levels: int,
    codebook_size: int,
    groups: np.ndarray | None = None,
    slices: dict | None = None,
    query_vectors: np.ndarray | None = None,
    pair_items: np.ndarray | None = None,
    pair_item_ids: np.ndarray | None = None,
    show_progress: bool = True,
) -> RQVAE:
    """Trains an RQ-VAE on item vectors ``x (N, D)``.

    Args:
        groups, slices: top-level category per item and its level-1 code slice (category guidance),
            or None.
        query_vectors: ``(P, D)`` query vectors of train (query, clicked item) pairs, or None
            (no contrastive term).
        pair_items: ``(P,)`` row index in ``x`` of each pair's clicked item.
        pair_item_ids: ``(P,)`` item ids (for masking in-batch duplicates).

    Returns:
        The trained model in eval mode, on ``settings.device``.
    """
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    model = RQVAE(x.shape[1], hidden, latent_dim, levels, codebook_size).to(device)
    with torch.no_grad():  # k-means init of every level on the untrained encoder's latents
        z0 = model.encoder(xt)
        for cb, init in zip(
            model.codebooks,
            fit_residual_kmeans(
                z0, levels, codebook_size, settings.kmeans_iters, settings.seed, groups, slices
            ),
        ):
            cb.data.copy_(init)
    lo_all = hi_all = None
    if slices is not None:
        lo_all, hi_all = slices_per_row(groups, slices, device)
    use_pairs = query_vectors is not None and len(query_vectors) > 0
    if use_pairs:
        qt = torch.as_tensor(query_vectors, dtype=torch.float32, device=device)
        pit = torch.as_tensor(np.array(pair_items, dtype=np.int64), device=device)
        pid = torch.as_tensor(np.array(pair_item_ids, dtype=np.int64), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps_per_epoch = math.ceil(len(x) / settings.batch_size)
    # Cosine decay to 10 % of the rate, and no revival in the last fifth: the codes and the
    # encoder must settle together, or the final SIDs are a snapshot of a still-moving model
    # (seen: query-item agreement swinging 0.36 <-> 0.74 between epochs without this).
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: (
            0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / (settings.epochs * steps_per_epoch))))
        ),
    )
    revive_until = max(1, int(0.8 * settings.epochs))
    bar = tqdm(range(settings.epochs), desc="RQ-VAE", disable=not show_progress)
    for _epoch in bar:  # noqa: B007 (read by the revival switch)
        used = [torch.zeros(codebook_size, dtype=torch.long, device=device) for _ in range(levels)]
        for rows in _batches(len(x), settings.batch_size, gen):
            rows = rows.to(device)
            xb = xt[rows]  # (b, D)
            lo, hi = (lo_all[rows], hi_all[rows]) if lo_all is not None else (None, None)
            z = model.encoder(xb)
            z_q, codes, vq = model.quantize_st(z, lo, hi)
            recon = F.mse_loss(model.decoder(z_q), xb) * xb.shape[1]  # per-vector squared error
            loss = recon + vq[0] + settings.beta * vq[1]
            if use_pairs:
                p = torch.randint(len(qt), (settings.batch_size,), generator=gen).to(device)
                items = pit[p]
                il, ih = (lo_all[items], hi_all[items]) if lo_all is not None else (None, None)
                item_q, item_codes, _ = model.quantize_st(model.encoder(xt[items]), il, ih)
                z_query = model.encoder(qt[p])
                q_loss = info_nce(z_query, item_q, pid[p], settings.temperature)
                if settings.code_alignment_weight > 0:
                    q_loss = q_loss + settings.code_alignment_weight * code_alignment(
                        z_query, model.codebooks, item_codes, settings.temperature, min(2, levels)
                    )
                loss = loss + settings.contrastive_weight * q_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for level in range(levels):
                used[level] += torch.bincount(codes[:, level], minlength=codebook_size)
        revived = _revive_dead_codes(model, xt, used, groups, slices, gen) if _epoch < revive_until else 0
        bar.set_postfix(loss=f"{loss.item():.4f}", recon=f"{recon.item():.4f}", revived=revived)
    logger.info(
        "RQ-VAE trained: %d epochs x %d steps, final loss %.4f", settings.epochs, steps_per_epoch, loss.item()
    )
    return model.eval()


class FrozenQuantizer:
    """The frozen part of a SID model: vector -> latent -> codes. Used to build and to assign.

    Args:
        encoder: the RQ-VAE encoder MLP, or None (RQ-KMeans: the latent is the vector itself).
        codebooks: ``L`` tensors ``(K, d)``.
        slices: ``{top-level category: (lo, hi)}`` level-1 code slices, or None.
    """

    def __init__(self, encoder: nn.Module | None, codebooks: list[torch.Tensor], slices: dict | None):
        self.encoder = encoder.eval().cpu() if encoder is not None else None
        self.codebooks = [cb.detach().float().cpu() for cb in codebooks]
        self.slices = slices

    @torch.no_grad()
    def latent(self, vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(n, D)`` vectors -> ``(n, d)`` latents."""
        x = torch.as_tensor(vectors, dtype=torch.float32)
        return self.encoder(x) if self.encoder is not None else x

    @torch.no_grad()
    def codes(
        self, vectors, groups: np.ndarray | None = None, block: int = 16384
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Codes ``(n, L)`` and latents ``(n, d)`` of ``vectors``, in row blocks (cache-sized temporaries).

        ``groups`` (top-level category per row) restricts level 1 to each row's slice; pass None for
        queries (all level-1 codes). With slices and no groups every code is allowed.
        """
        lo = hi = None
        if self.slices is not None and groups is not None:
            lo, hi = slices_per_row(groups, self.slices)
        codes, latents = [], []
        for s in range(0, len(vectors), block):
            z = self.latent(vectors[s : s + block])
            c, _ = residual_quantize(
                z, self.codebooks, *((lo[s : s + block], hi[s : s + block]) if lo is not None else ())
            )
            codes.append(c)
            latents.append(z)
        return torch.cat(codes).numpy(), torch.cat(latents)

    def state(self) -> dict:
        return {
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "codebooks": self.codebooks,
        }

    @classmethod
    def from_state(cls, state: dict, encoder_dims: list[int] | None, slices: dict | None) -> FrozenQuantizer:
        encoder = None
        if state["encoder"] is not None:
            encoder = encoder_mlp(encoder_dims)
            encoder.load_state_dict(state["encoder"])
        return cls(encoder, state["codebooks"], slices)
