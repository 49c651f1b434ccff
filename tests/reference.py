"""Independent float64 NumPy re-computation of attention, the reference for the tests."""

import numpy as np


def attention_float64(q, k, v, *, bias=None, mask=None, is_causal=False, scale=None):
    """softmax(q k^T * scale + bias) v in float64, q [..., T, H, D], k/v [..., S, Hk, D].

    Rows with no visible key give zeros (the attnjax convention). Returns (out, weights).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    t, h, d = q.shape[-3:]
    s, hk = k.shape[-3:-1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    # Repeat the K/V heads: query head i reads kv head i // (H // Hk).
    k = np.repeat(k, h // hk, axis=-2)
    v = np.repeat(v, h // hk, axis=-2)
    logits = np.einsum("...thd,...shd->...hts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    keep = np.ones(logits.shape, bool)
    if mask is not None:
        keep = keep & np.asarray(mask, bool)
    if is_causal:
        keep = keep & np.tril(np.ones((t, s), bool))
    logits = np.where(keep, logits, -np.inf)
    row_max = logits.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(keep, np.exp(logits - row_max), 0.0)
    denom = e.sum(axis=-1, keepdims=True)
    weights = e / np.where(denom > 0, denom, 1.0)
    out = np.einsum("...hts,...shd->...thd", weights, v)
    return out, weights
