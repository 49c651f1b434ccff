"""When every seed has its own data set (the data-draw axis of a seed): the ``batches``
function ``attnjax.train.train`` takes, and padding the seeds' arrays to one width so the
evaluation of every seed reuses one compiled program."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from attnjax.train.loop import make_batch_fn

Batch = dict[str, np.ndarray]


def per_seed_batches(arrays_by_seed: Mapping[int, Batch], batch_size: int, **batch_kwargs):
    """``batches(rngs, step)`` for ``train``: seed ``rngs.seed``'s arrays, ordered by its
    ``data_order`` stream (``make_batch_fn``; ``batch_kwargs`` are passed on)."""
    fns = {}

    def batches(rngs, step):
        if rngs.seed not in fns:
            arrays = arrays_by_seed[rngs.seed]
            size = min(batch_size, len(next(iter(arrays.values()))))
            fns[rngs.seed] = make_batch_fn(arrays, size, rngs.int("data_order"), **batch_kwargs)
        return fns[rngs.seed](step)

    return batches


def pad_columns(arrays: Batch, width: int, keys) -> Batch:
    """``arrays`` with the ``[N, W]`` arrays named in ``keys`` right-padded with 0 (padding)
    to ``width`` columns.

    Raises:
      ValueError: an array is wider than ``width``.
    """
    out = dict(arrays)
    for key in keys:
        w = arrays[key].shape[1]
        if w > width:
            raise ValueError(f"pad_columns: {key!r} has {w} columns, more than width={width}")
        out[key] = np.pad(arrays[key], [(0, 0), (0, width - w)] + [(0, 0)] * (arrays[key].ndim - 2))
    return out
