"""The simulated catalogue: items with readable titles, a price per category, quality, popularity.

Vectorised with numpy; the only Python loop is the string assembly of titles and descriptions
(about 1 s per million items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eg_grpo.data.vocabulary import ATTRIBUTE_FAMILIES, BRANDS, LEAVES, check_vocabulary


@dataclass
class Taxonomy:
    """Flat arrays over the vocabulary, built once per simulation.

    Leaves are ordered as in ``LEAVES`` (grouped by top and mid category). Word tables hold the
    strings; per-leaf ``*_offset`` / ``*_count`` give each leaf its slice of a word table.
    """

    leaf_keys: list[str]  # (L,)
    leaf_top: np.ndarray  # (L,) top-level index
    leaf_mid: np.ndarray  # (L,) mid-level index
    leaf_price: np.ndarray  # (L,) median price
    nouns: list[tuple[str, ...]]  # noun groups, canonical first
    noun_offset: np.ndarray  # (L,)
    noun_count: np.ndarray  # (L,)
    brands: list[str]
    brand_offset: np.ndarray  # (L,) slice of `brands` for the leaf's mid category
    brand_count: np.ndarray  # (L,)
    attrs: dict[str, list[str]]  # kind ("colours", ...) -> word table
    attr_offset: dict[str, np.ndarray]  # kind -> (L,)
    attr_count: dict[str, np.ndarray]  # kind -> (L,)


ATTRIBUTE_KINDS = ("colours", "materials", "styles", "sizes")


def build_taxonomy() -> Taxonomy:
    """Flattens :data:`~eg_grpo.data.vocabulary.LEAVES` into index arrays."""
    check_vocabulary()
    tops = list(dict.fromkeys(leaf.path[0] for leaf in LEAVES))
    mids = list(dict.fromkeys(leaf.path[1] for leaf in LEAVES))
    families = list(ATTRIBUTE_FAMILIES)
    nouns, noun_offset, noun_count = [], [], []
    for leaf in LEAVES:
        noun_offset.append(len(nouns))
        noun_count.append(len(leaf.nouns))
        nouns.extend(leaf.nouns)
    brands, mid_brand_offset = [], {}
    for mid in mids:
        mid_brand_offset[mid] = len(brands)
        brands.extend(BRANDS[mid])
    attrs, attr_offset, attr_count = {}, {}, {}
    for kind in ATTRIBUTE_KINDS:
        table, fam_offset = [], {}
        for fam in families:
            fam_offset[fam] = len(table)
            table.extend(getattr(ATTRIBUTE_FAMILIES[fam], kind))
        attrs[kind] = table
        attr_offset[kind] = np.array([fam_offset[leaf.family] for leaf in LEAVES])
        attr_count[kind] = np.array([len(getattr(ATTRIBUTE_FAMILIES[leaf.family], kind)) for leaf in LEAVES])
    return Taxonomy(
        leaf_keys=[leaf.key for leaf in LEAVES],
        leaf_top=np.array([tops.index(leaf.path[0]) for leaf in LEAVES]),
        leaf_mid=np.array([mids.index(leaf.path[1]) for leaf in LEAVES]),
        leaf_price=np.array([leaf.price for leaf in LEAVES], dtype=float),
        nouns=nouns,
        noun_offset=np.array(noun_offset),
        noun_count=np.array(noun_count),
        brands=brands,
        brand_offset=np.array([mid_brand_offset[leaf.path[1]] for leaf in LEAVES]),
        brand_count=np.array([len(BRANDS[leaf.path[1]]) for leaf in LEAVES]),
        attrs=attrs,
        attr_offset=attr_offset,
        attr_count=attr_count,
    )


def pick(u: np.ndarray, offset: np.ndarray, count: np.ndarray, skew: float = 1.0) -> np.ndarray:
    """Maps uniforms ``u`` to an index in ``[offset, offset + count)``; ``skew > 1`` favours the first."""
    return offset + np.minimum((u**skew * count).astype(np.int64), count - 1)


@dataclass
class Catalogue:
    """The items table plus the latent arrays the log simulation needs (aligned with its rows)."""

    items: pd.DataFrame
    leaf: np.ndarray  # (N,) leaf index
    noun: np.ndarray  # (N,) index into taxonomy.nouns
    brand: np.ndarray  # (N,) index into taxonomy.brands
    style: np.ndarray  # (N,) index into taxonomy.attrs["styles"]
    quality_z: np.ndarray  # (N,) latent quality, standard normal scale
    price_z: np.ndarray  # (N,) log-price deviation from the leaf median, in units of price_sigma
    popularity: np.ndarray  # (N,) share of attention, sums to 1
    by_leaf: np.ndarray  # (N,) item rows sorted by leaf (stable)
    leaf_start: np.ndarray  # (L,) slice of `by_leaf` per leaf
    leaf_end: np.ndarray  # (L,)


def build_catalogue(config, tax: Taxonomy, rng: np.random.Generator) -> Catalogue:
    """Draws ``config.n_items`` items.

    Args:
        config: a [`~eg_grpo.data.simulator.SimulatorConfig`].
        tax: from [`build_taxonomy`].
        rng: the random generator (consumed in a fixed order, so a seed fixes the catalogue).

    Returns:
        [`Catalogue`].
    """
    n, n_leaves = config.n_items, len(tax.leaf_keys)
    # Leaf sizes vary (Dirichlet); every leaf gets at least one item when n allows it, so every
    # intent a request can have is served by some item.
    shares = rng.dirichlet(np.full(n_leaves, config.leaf_size_concentration))
    leaf = np.concatenate(
        [rng.permutation(n_leaves)[: min(n, n_leaves)], rng.choice(n_leaves, max(n - n_leaves, 0), p=shares)]
    )
    leaf = leaf[rng.permutation(n)]
    u = rng.random((n, 8))
    noun = pick(u[:, 0], tax.noun_offset[leaf], tax.noun_count[leaf], skew=1.3)
    brand = pick(u[:, 1], tax.brand_offset[leaf], tax.brand_count[leaf], skew=1.6)
    word = {
        kind: pick(u[:, 2 + k], tax.attr_offset[kind][leaf], tax.attr_count[kind][leaf], skew=1.3)
        for k, kind in enumerate(ATTRIBUTE_KINDS)
    }
    # Quality: a brand effect plus item noise. Price rises with quality and a brand premium.
    brand_quality = rng.normal(0.0, 0.6, len(tax.brands))
    brand_premium = rng.normal(0.0, 0.4, len(tax.brands))
    quality_z = (brand_quality[brand] + rng.normal(0.0, 0.8, n)) / 1.0
    price_z = 0.4 * quality_z + brand_premium[brand] + rng.normal(0.0, 0.8, n)
    price = np.round(tax.leaf_price[leaf] * np.exp(config.price_sigma * price_z), 0) - 0.01
    price = np.maximum(price, 0.99)
    # Zipf-like popularity: ranks ordered by a noisy quality, so better items tend to be popular.
    order = np.argsort(-(quality_z + rng.gumbel(0.0, 1.5, n)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    pop = rank.astype(float) ** (-config.popularity_exponent)
    pop /= pop.sum()

    titles, descriptions = _texts(tax, leaf, noun, brand, word, u[:, 6], rng.random((n, 5)))
    items = pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "title": titles,
            "category_path": [list(LEAVES[i].path) for i in leaf],
            "brand": np.array(tax.brands, dtype=object)[brand],
            "price": price,
            "description": descriptions,
            "gt_noun": np.array([g[0] for g in tax.nouns], dtype=object)[noun],
            "gt_colour": np.array(tax.attrs["colours"], dtype=object)[word["colours"]],
            "gt_material": np.array(tax.attrs["materials"], dtype=object)[word["materials"]],
            "gt_style": np.array(tax.attrs["styles"], dtype=object)[word["styles"]],
            "gt_size": np.array(tax.attrs["sizes"], dtype=object)[word["sizes"]],
            "gt_quality": 1.0 / (1.0 + np.exp(-quality_z)),
            "gt_popularity": pop / pop.max(),
        }
    )
    by_leaf = np.argsort(leaf, kind="stable")
    leaf_start = np.searchsorted(leaf[by_leaf], np.arange(n_leaves), side="left")
    leaf_end = np.searchsorted(leaf[by_leaf], np.arange(n_leaves), side="right")
    return Catalogue(
        items=items,
        leaf=leaf,
        noun=noun,
        brand=brand,
        style=word["styles"],
        quality_z=quality_z,
        price_z=price_z,
        popularity=pop,
        by_leaf=by_leaf,
        leaf_start=leaf_start,
        leaf_end=leaf_end,
    )


_UPPER = {"rgb", "usb", "tv", "anc", "led", "spf", "rc", "xl", "xxl", "xs", "3d", "a4", "a5", "a6", "hz"}


def _cap(text: str) -> str:
    """Title case that keeps acronyms and sizes readable ("usb c cable" -> "USB C Cable", "30ml")."""
    words = text.split(" ")
    return " ".join(
        w.upper() if w in _UPPER else (w if any(ch.isdigit() for ch in w) else w.capitalize()) for w in words
    )


def _texts(tax, leaf, noun, brand, word, u_template, u_show):
    """Titles like "Sonora Wireless Black Aluminium Headphones, XL" with optional parts and orders."""
    show = (u_show < np.array([0.92, 0.6, 0.45, 0.6, 0.3])).tolist()  # brand, colour, material, style, size
    template = (u_template * 3).astype(np.int64).tolist()
    # Capitalise each vocabulary word once, not once per item (1M titles).
    cap = {kind: [_cap(w) for w in tax.attrs[kind]] for kind in ATTRIBUTE_KINDS}
    cap_noun = [_cap(g[0]) for g in tax.nouns]
    colours, materials, styles, sizes = (tax.attrs[k] for k in ATTRIBUTE_KINDS)
    idx = zip(
        leaf.tolist(),
        noun.tolist(),
        brand.tolist(),
        *(word[k].tolist() for k in ATTRIBUTE_KINDS),
        template,
        show,
    )
    titles, descriptions = [], []
    for i, (lf, nn, bb, ci, mi, si, zi, tpl, (sb, sc, sm, ss, sz)) in enumerate(idx):
        b, z = tax.brands[bb], sizes[zi]
        c, m, s = cap["colours"][ci], cap["materials"][mi], cap["styles"][si]
        if tpl == 0:  # brand style colour material noun, size
            parts = [b if sb else "", s if ss else "", c if sc else "", m if sm else "", cap_noun[nn]]
            title = " ".join(p for p in parts if p) + (f", {z}" if sz else "")
        elif tpl == 1:  # brand noun - colour material style (size)
            tail = " ".join(p for p in (c if sc else "", m if sm else "", s if ss else "") if p)
            title = (
                (f"{b} " if sb else "")
                + cap_noun[nn]
                + (f" - {tail}" if tail else "")
                + (f" ({z})" if sz else "")
            )
        else:  # style material noun by brand, colour
            parts = [s if ss else "", m if sm else "", cap_noun[nn]]
            title = " ".join(p for p in parts if p) + (f" by {b}" if sb else "") + (f", {c}" if sc else "")
        titles.append(title)
        group = tax.nouns[nn]
        syn = group[(i % (len(group) - 1)) + 1] if len(group) > 1 else group[0]
        descriptions.append(
            f"{styles[si].capitalize()} {group[0]} by {b} in {colours[ci]}, made of {materials[mi]}. Size {z}. "
            f"Also known as {syn}. Category: {tax.leaf_keys[lf]}."
        )
    return titles, descriptions
