"""Mini-batches from a dict of equal-length NumPy arrays (e.g. the output of ``encode_pairs``).

Two iterators:

* ``batches``: fixed shapes. Every batch has the arrays' full padded width, so a jitted train
  step compiles once (plus once more for a smaller last batch unless ``drop_remainder``).
* ``bucket_by_length``: batches of examples with similar lengths, optionally trimmed to the
  longest row in the batch. Less padding, but each new width is a new shape and therefore a
  new XLA compilation of a jitted step; ``pad_to_multiple`` bounds how many widths occur.

Shuffling uses an explicit ``np.random.Generator``: the order is a function of the
generator's state, so ``np.random.default_rng(seed)`` gives the same epochs on every run,
and calling again with the same generator gives the next epoch's (different) order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from attnjax.data.vocab import PAD_ID


def _num_examples(arrays: Mapping[str, np.ndarray], fn: str) -> int:
    if not arrays:
        raise ValueError(f"{fn}: `arrays` is empty; expected e.g. {{'source': [N, S], ...}}")
    lengths = {key: np.shape(value)[0] if np.ndim(value) else None for key, value in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        shapes = {key: list(np.shape(value)) for key, value in arrays.items()}
        raise ValueError(
            f"{fn}: every array in `arrays` must have the same leading dim N, got shapes {shapes}"
        )
    return next(iter(lengths.values()))


def _check_batch_size(batch_size: int, fn: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"{fn}: `batch_size` must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"{fn}: `batch_size` must be >= 1, got {batch_size}")


def _epoch_order(n: int, batch_size: int, rng, drop_remainder: bool) -> np.ndarray:
    # The examples dropped by drop_remainder are the tail of the (shuffled) order, so with a
    # generator they differ from epoch to epoch instead of always being the same ones.
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if drop_remainder:
        order = order[: n - n % batch_size]
    return order


def batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    drop_remainder: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of mini-batches with the arrays' full shapes.

    Args:
      arrays: ``{name: [N, ...]}``, every array with the same leading dim N.
      batch_size: B, examples per batch.
      rng: if given, the epoch visits examples in ``rng.permutation(N)`` order; otherwise in
        index order.
      drop_remainder: drop the last ``N % B`` examples of the order, so every batch is
        ``[B, ...]``. Otherwise the last batch is ``[N % B, ...]``.

    Yields:
      ``{name: [B, ...]}``: every example exactly once per epoch (unless dropped).
    """
    n = _num_examples(arrays, "batches")
    _check_batch_size(batch_size, "batches")
    order = _epoch_order(n, batch_size, rng, drop_remainder)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield {key: np.asarray(value)[index] for key, value in arrays.items()}


def row_lengths(tokens: np.ndarray, pad_id: int = PAD_ID) -> np.ndarray:
    """``[N]`` int: one past the last non-padding position of each row of ``tokens [N, L]``.

    Counting up to the last real token (not the number of real tokens) keeps a row intact if
    it happens to contain the padding id in the middle.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"row_lengths: `tokens` must have shape [N, L], got {list(tokens.shape)}")
    real = tokens != pad_id
    last = tokens.shape[1] - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last, 0)


def trim_padding(
    batch: Mapping[str, np.ndarray],
    *,
    pad_id: int = PAD_ID,
    pad_to_multiple: int = 1,
    keys: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Drop trailing all-padding columns of each ``[B, L]`` array in ``batch``.

    Each array ``[B, L]`` in ``keys`` becomes ``[B, L']`` with ``L'`` its longest row rounded
    up to a multiple of ``pad_to_multiple`` (never above ``L``); arrays are trimmed
    independently, so ``source`` and ``target_in`` keep their own widths. Arrays not in
    ``keys`` are returned unchanged.

    Args:
      batch: ``{name: [B, ...]}``.
      pad_id: the padding id (0 for ``Vocab``).
      pad_to_multiple: round widths up to this multiple (e.g. 8) so that a jitted step sees
        only a few distinct shapes and compiles only a few times.
      keys: arrays to trim; default every 2-D array.
    """
    if pad_to_multiple < 1:
        raise ValueError(f"trim_padding: `pad_to_multiple` must be >= 1, got {pad_to_multiple}")
    if keys is None:
        keys = [key for key, value in batch.items() if np.ndim(value) == 2]
    trimmed = dict(batch)
    for key in keys:
        if key not in batch or np.ndim(batch[key]) != 2:
            raise ValueError(
                f"trim_padding: `keys` entry {key!r} must name a [B, L] array of `batch`, got "
                f"{list(np.shape(batch[key])) if key in batch else 'no such key'}"
            )
        value = np.asarray(batch[key])
        longest = int(row_lengths(value, pad_id).max(initial=0))
        width = min(value.shape[1], -(-longest // pad_to_multiple) * pad_to_multiple)
        trimmed[key] = value[:, :width]
    return trimmed


def bucket_by_length(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    length_key: str = "source",
    rng: np.random.Generator | None = None,
    drop_remainder: bool = False,
    trim: bool = True,
    pad_to_multiple: int = 1,
    pad_id: int = PAD_ID,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of mini-batches whose examples have similar ``length_key`` lengths.

    The epoch order (shuffled by ``rng`` if given) is stably sorted by the length of each
    ``arrays[length_key]`` row, cut into consecutive batches of B, and the batches are then
    visited in a random order (if ``rng``) or shortest first. So ties are broken at random
    and every example still appears exactly once per epoch (unless dropped).

    Shapes: with ``trim=False`` every batch keeps the full ``[B, L]`` widths (only the
    grouping changes). With ``trim=True`` each 2-D array is cut to its longest row in the
    batch rounded up to ``pad_to_multiple`` (see ``trim_padding``), so widths vary from batch
    to batch. A jitted step recompiles for every new width: use ``pad_to_multiple=8`` (or
    larger) to bound the number of compilations, or ``trim=False`` for one shape.

    Args:
      arrays: ``{name: [N, ...]}`` with the same N, including ``length_key`` of shape [N, L].
      batch_size: B.
      length_key: the array whose row lengths (up to its last non-padding id) group examples.
      rng: shuffles ties and the order of batches; None gives a deterministic order.
      drop_remainder: drop the last ``N % B`` examples of the shuffled order (before
        sorting, so with ``rng`` it is not always the longest ones).
      trim: cut trailing padding columns per batch.
      pad_to_multiple: round trimmed widths up to this multiple.
      pad_id: the padding id.

    Yields:
      ``{name: [B, ...]}`` (``[B, L']`` with ``L' <= L`` for 2-D arrays when trimming).
    """
    n = _num_examples(arrays, "bucket_by_length")
    _check_batch_size(batch_size, "bucket_by_length")
    if length_key not in arrays or np.ndim(arrays[length_key]) != 2:
        raise ValueError(
            f"bucket_by_length: `length_key`={length_key!r} must name a [N, L] array of "
            f"`arrays`, which has {sorted(arrays)}"
        )
    if pad_to_multiple < 1:
        raise ValueError(f"bucket_by_length: `pad_to_multiple` must be >= 1, got {pad_to_multiple}")
    order = _epoch_order(n, batch_size, rng, drop_remainder)
    lengths = row_lengths(arrays[length_key], pad_id)
    order = order[np.argsort(lengths[order], kind="stable")]
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    chunk_order = rng.permutation(len(chunks)) if rng is not None else range(len(chunks))
    for c in chunk_order:
        batch = {key: np.asarray(value)[chunks[c]] for key, value in arrays.items()}
        yield trim_padding(batch, pad_id=pad_id, pad_to_multiple=pad_to_multiple) if trim else batch
