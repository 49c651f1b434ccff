"""Long-range recall: a key at the start of a sequence must be reproduced at its end.

``[key] noise ... noise [query]`` -> ``key``. The key is one of ``num_keys`` tokens, the
noise is drawn from ``num_noise`` other tokens, and the only useful information sits
``length - 1`` steps before the readout: a recurrent network must carry it through every
step, attention can read it directly. Deterministic given the seed.
"""

from __future__ import annotations

import numpy as np

from attnjax.data.vocab import SPECIAL_TOKENS

QUERY_ID = len(SPECIAL_TOKENS)  # the readout token


def vocab_size(num_keys: int, num_noise: int) -> int:
    """Ids: the special tokens, the query token, the keys, the noise."""
    return QUERY_ID + 1 + num_keys + num_noise


def recall_batch(
    seed: int | list[int], n: int, length: int, *, num_keys: int = 8, num_noise: int = 16
) -> dict[str, np.ndarray]:
    """``n`` sequences of ``length`` tokens.

    Returns:
      ``tokens [n, length]`` int32 (``tokens[:, 0]`` the key, ``tokens[:, -1]`` the query),
      ``label [n]`` (the key's index in ``0..num_keys-1``) and ``last [n]`` (``length - 1``,
      the readout position).
    """
    if length < 2:
        raise ValueError(f"recall_batch: `length` must be >= 2 (key + query), got {length}")
    rng = np.random.default_rng(seed)
    first_key = QUERY_ID + 1
    label = rng.integers(num_keys, size=n)
    tokens = rng.integers(first_key + num_keys, first_key + num_keys + num_noise, (n, length))
    tokens[:, 0] = first_key + label
    tokens[:, -1] = QUERY_ID
    return {
        "tokens": tokens.astype(np.int32),
        "label": label.astype(np.int32),
        "last": np.full(n, length - 1, np.int32),
    }


def distance_batch(
    seed: int | list[int], n: int, length: int, distances, *, num_keys: int = 8,
    num_noise: int = 16,
) -> dict[str, np.ndarray]:
    """``n`` sequences of ``length`` tokens whose key sits ``d`` steps before the query.

    ``noise ... [key] noise ... noise [query]``: the key at position ``length - 1 - d``,
    ``d`` drawn uniformly from ``distances`` per sequence (one model trained on a range of
    distances is then tested at each). Keys never occur as noise, so the only information
    the readout needs is ``d`` steps back.

    Returns:
      ``recall_batch``'s arrays plus ``distance [n]``.
    """
    distances = np.atleast_1d(np.asarray(distances, dtype=int))
    if distances.ndim != 1 or distances.size == 0 or distances.min() < 1 or \
            distances.max() > length - 1:
        raise ValueError(f"distance_batch: `distances` must be a non-empty sequence in "
                         f"[1, length - 1 = {length - 1}], got {distances.tolist()}")
    batch = recall_batch(seed, n, length, num_keys=num_keys, num_noise=num_noise)
    # A stream apart from recall_batch's draws of the same seed.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    distance = rng.choice(distances, size=n)
    rows = np.arange(n)
    key = batch["tokens"][:, 0].copy()
    batch["tokens"][:, 0] = rng.integers(QUERY_ID + 1 + num_keys,
                                         QUERY_ID + 1 + num_keys + num_noise, size=n)
    batch["tokens"][rows, length - 1 - distance] = key
    return {**batch, "distance": distance.astype(np.int32)}
