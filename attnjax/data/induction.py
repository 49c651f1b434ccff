"""Repeated random token sequences, the task on which induction heads form (Olsson et al.
2022, "In-context Learning and Induction Heads").

Each example is ``[BOS, x_1 .. x_n, x_1 .. x_n]`` with ``x`` drawn uniformly from the
vocabulary (ids ``2 .. V-1``; 0 is padding, 1 BOS). The first half is unpredictable (loss
~ log(V - 2)); every token of the second half is predictable, but only from the context:
the model must find the earlier occurrence of the current token and copy what followed it.
"""

from __future__ import annotations

import numpy as np

BOS_ID = 1
FIRST_TOKEN_ID = 2


def repeated_sequences(rng: np.random.Generator, batch_size: int, half_length: int,
                       vocab_size: int) -> np.ndarray:
    """``[batch_size, 1 + 2 * half_length]`` int32 sequences ``BOS, x, x``."""
    if vocab_size <= FIRST_TOKEN_ID + 1:
        raise ValueError(f"repeated_sequences: vocab_size must be > 3, got {vocab_size}")
    half = rng.integers(FIRST_TOKEN_ID, vocab_size, size=(batch_size, half_length))
    bos = np.full((batch_size, 1), BOS_ID)
    return np.concatenate([bos, half, half], axis=1).astype(np.int32)


def batch_at(step: int, *, seed: int, batch_size: int, half_length: int, vocab_size: int
             ) -> dict[str, np.ndarray]:
    """The training batch of ``step``: a pure function of ``(seed, step)`` (exact resume)."""
    rng = np.random.default_rng([seed, step])
    return {"tokens": repeated_sequences(rng, batch_size, half_length, vocab_size)}
