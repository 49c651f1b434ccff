"""Repeated random token sequences, the task on which induction heads form (Olsson et al.
2022, "In-context Learning and Induction Heads").

Each example is ``[BOS, x_1 .. x_n, x_1 .. x_n, x_1 ..]``: a segment ``x`` of ``n`` random
tokens tiled to length ``2 N`` (``N = half_length``), so every example has length
``1 + 2 N``. Tokens are drawn uniformly from ids ``2 .. V-1`` (0 is padding, 1 BOS). The
first copy is unpredictable (loss ~ log(V - 2)); every later token after the first of the
second copy is predictable, but only from the context: find the earlier occurrence of the
current token and copy what followed it.

With a fixed period (``min_half_length == half_length``: ``[BOS, x, x]``) the copy sits at
a fixed offset, and a single head attending ``n - 1`` positions back solves the task from
positions alone, without looking at tokens; drawing the period ``n`` per example from
``[min_half_length, half_length]`` leaves only the token-matching (induction) solution.
"""

from __future__ import annotations

import numpy as np

BOS_ID = 1
FIRST_TOKEN_ID = 2


def repeated_sequences(rng: np.random.Generator, batch_size: int, half_length: int,
                       vocab_size: int, min_half_length: int | None = None
                       ) -> dict[str, np.ndarray]:
    """A batch of ``BOS, x, x, ..`` sequences (``x`` of period n tiled).

    Args:
      rng: the generator every token and period is drawn from.
      half_length: N, the longest repeated segment (the sequence length is ``1 + 2 N``).
      vocab_size: V; tokens are ids ``2 .. V - 1``.
      min_half_length: the shortest segment; default N (every period N, no filler).

    Returns:
      ``{"tokens": [batch_size, 1 + 2 N] int32, "period": [batch_size] int32}``, period n
      = the segment length (the distance between a token and its next repeat).
    """
    if vocab_size <= FIRST_TOKEN_ID + 1:
        raise ValueError(f"repeated_sequences: vocab_size must be > 3, got {vocab_size}")
    low = half_length if min_half_length is None else int(min_half_length)
    if not 2 <= low <= half_length:
        raise ValueError(f"repeated_sequences: need 2 <= min_half_length={low} <= "
                         f"half_length={half_length}")
    period = rng.integers(low, half_length + 1, size=batch_size)
    segment = rng.integers(FIRST_TOKEN_ID, vocab_size, size=(batch_size, half_length))
    # Position p of the body (token p + 1 of the sequence) is x_{p mod n}: x tiled.
    source = np.arange(2 * half_length)[None, :] % period[:, None]
    body = np.take_along_axis(segment, source, axis=1)
    bos = np.full((batch_size, 1), BOS_ID)
    return {"tokens": np.concatenate([bos, body], axis=1).astype(np.int32),
            "period": period.astype(np.int32)}


def batch_at(step: int, *, seed: int, batch_size: int, half_length: int, vocab_size: int,
             min_half_length: int | None = None) -> dict[str, np.ndarray]:
    """The training batch of ``step``: a pure function of ``(seed, step)`` (exact resume)."""
    rng = np.random.default_rng([seed, step])
    return repeated_sequences(rng, batch_size, half_length, vocab_size, min_half_length)


def copy_targets(period: np.ndarray, half_length: int) -> dict[str, np.ndarray]:
    """Which next-token predictions are in context-free and in repeated territory, for
    inputs ``tokens[:, :-1]``.

    Position ``p`` of the ``[B, 2 N]`` per-token losses predicts token ``p + 1``. "first" is
    the first copy's ``x_2 .. x_n`` (tokens 2..n), "second" every token from the second
    copy's ``x_2`` on (tokens >= n + 2; the second copy's ``x_1`` follows ``x_n``, whose
    only occurrence is the one just seen, so no earlier context predicts it).

    Returns:
      ``{"first": [B, 2 N] bool, "second": [B, 2 N] bool, "prefix_key": [B, 2 N] int}``:
      ``prefix_key[b, q]`` is, for an input position ``q >= n + 1`` (a repeated token
      ``x_j``), the position of the token that followed ``x_j``'s latest earlier occurrence
      (``q - n + 1``: the key an induction head attends to), and -1 elsewhere.
    """
    period = np.asarray(period)[:, None]
    t = 2 * half_length
    target = np.arange(t)[None, :] + 1  # the token position each loss predicts
    first = (target >= 2) & (target <= period)
    second = target >= period + 2
    q = np.arange(t)[None, :]
    prefix_key = np.where(q >= period + 1, q - period + 1, -1)
    return {"first": first, "second": second, "prefix_key": prefix_key}


def order_blind_loss(tokens: np.ndarray, period: np.ndarray) -> float:
    """Mean loss on the "second" targets of ``copy_targets`` of the best predictor that
    knows the segment's tokens and which of them the current copy has still to show, but
    not their order: it predicts the rest of the copy, ``x_j .. x_n``, uniformly, loss
    ``-log(count(x_j) / (n - j + 1))``.

    A model without induction (that only counts which tokens it has seen, e.g. one
    attention layer) cannot beat it; an in-context score above ``log(V - 2)`` minus this
    needs the order of the context.
    """
    tokens = np.asarray(tokens)
    losses = []
    for row, n in zip(tokens, np.asarray(period), strict=True):
        segment = row[1:n + 1]
        for position in range(n + 2, len(row)):
            j = (position - 1) % n  # 0-based index of the target in its copy
            rest = segment[j:]
            losses.append(-np.log(np.sum(rest == segment[j]) / len(rest)))
    return float(np.mean(losses))
