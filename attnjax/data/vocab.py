"""Token <-> id vocabularies and padded int32 arrays for sequence-to-sequence tasks.

Ids 0..3 are always the special tokens, so code that only needs "which positions are
padding" can test ``ids != PAD_ID`` without a vocabulary in hand (``attnjax.ops``'s
``valid_from_tokens`` uses ``pad_id=0`` by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def _check_token_sequence(tokens, name: str) -> None:
    # A bare string is a Sequence[str] too, and would silently become one token per character.
    if isinstance(tokens, str):
        raise ValueError(
            f"{name} must be a sequence of tokens (e.g. command.split()), got the string {tokens!r}"
        )
    for token in tokens:
        if not isinstance(token, str):
            raise ValueError(f"{name} must contain only str tokens, got {token!r}")


class Vocab:
    """An immutable mapping between tokens and integer ids.

    ``tokens[i]`` is the token with id ``i``; the first four are always
    ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = tuple(tokens)
        if tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(
                f"Vocab: `tokens` must start with {list(SPECIAL_TOKENS)}, got "
                f"{list(tokens[: len(SPECIAL_TOKENS)])}"
            )
        _check_token_sequence(tokens, "Vocab: `tokens`")
        if len(set(tokens)) != len(tokens):
            duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"Vocab: `tokens` has duplicates: {duplicates}")
        self._tokens = tokens
        self._ids = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> Vocab:
        """The special tokens, then every distinct corpus token in sorted order.

        Sorting (rather than first-seen order) makes the ids independent of how the corpus
        was shuffled, so two runs on the same data agree on ids.

        Args:
          sequences: token sequences, e.g. ``[("walk", "twice"), ("jump",)]``.
        """
        corpus = set()
        for i, sequence in enumerate(sequences):
            _check_token_sequence(sequence, f"Vocab.build: `sequences[{i}]`")
            corpus.update(sequence)
        clashes = sorted(corpus & set(SPECIAL_TOKENS))
        if clashes:
            raise ValueError(
                f"Vocab.build: `sequences` contain reserved special tokens {clashes}; "
                "they would be indistinguishable from the real specials"
            )
        return cls(SPECIAL_TOKENS + tuple(sorted(corpus)))

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, indexed by id."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        more = " ..." if len(self) > 8 else ""
        return f"Vocab({len(self)} tokens: {list(self._tokens[:8])}{more})"

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; a token not in the vocabulary becomes ``<unk>`` (3)."""
        _check_token_sequence(tokens, "Vocab.encode: `tokens`")
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Tokens of ``ids`` (a list or a 1-D array, e.g. one row of a model's output).

        Args:
          ids: integer ids in ``[0, len(self))``.
          strip_special: if True, stop at the first ``<eos>`` and drop ``<pad>`` and ``<bos>``,
            giving the words a model actually produced. ``<unk>`` is kept, because it stands
            for a real word. If False, every id is decoded verbatim.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"Vocab.decode: `ids` must be a 1-D sequence of ints, got shape "
                f"{list(ids.shape)} dtype {ids.dtype}"
            )
        out_of_range = ids[(ids < 0) | (ids >= len(self))]
        if out_of_range.size:
            raise ValueError(
                f"Vocab.decode: `ids` must lie in [0, {len(self)}), got {out_of_range.tolist()}"
            )
        tokens = []
        for i in ids.tolist():
            if strip_special and i == EOS_ID:
                break
            if strip_special and i in (PAD_ID, BOS_ID):
                continue
            tokens.append(self._tokens[i])
        return tokens

    def to_json(self) -> str:
        """A JSON string ``{"tokens": [...]}`` that ``from_json`` turns back into this Vocab."""
        return json.dumps({"tokens": list(self._tokens)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ValueError('Vocab.from_json: `text` must be a JSON object {"tokens": [...]}')
        return cls(data["tokens"])

    def save(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` (e.g. ``runs/NAME/<time>/source_vocab.json``)."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _padded(rows: list[list[int]], width: int) -> np.ndarray:
    array = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return array


def _width(rows: list[list[int]], max_len: int | None, name: str, side: str) -> int:
    longest = max(len(row) for row in rows)
    if max_len is None:
        return longest
    if max_len < 1:
        raise ValueError(f"encode_pairs: `{name}` must be >= 1, got {max_len}")
    for i, row in enumerate(rows):
        if len(row) > max_len:
            raise ValueError(
                f"encode_pairs: example {i} has {side} length {len(row) - 1} (+1 for "
                f"{'<eos>' if side == 'source' else '<bos>/<eos>'}) = {len(row)} > "
                f"`{name}`={max_len}"
            )
    return max_len


def encode_pairs(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    source_vocab: Vocab,
    target_vocab: Vocab,
    max_source_len: int | None = None,
    max_target_len: int | None = None,
) -> dict[str, np.ndarray]:
    """Encode ``(source_tokens, target_tokens)`` pairs as right-padded int32 arrays.

    Args:
      pairs: N pairs of token sequences, e.g. the output of ``scan.load_split``.
      source_vocab, target_vocab: vocabularies for the two sides (may be the same object).
      max_source_len: S, the width of ``source``, counting the ``<eos>``. Defaults to the
        longest source + 1. An example that does not fit raises a ValueError naming it.
      max_target_len: T, the width of ``target_in``/``target_out``, counting the ``<bos>``
        (or ``<eos>``). Defaults to the longest target + 1.

    Returns:
      ``source [N, S]``: source ids then ``<eos>``, then ``<pad>`` (0).
      ``target_in [N, T]``: ``<bos>`` then target ids, then padding: the decoder input
        under teacher forcing.
      ``target_out [N, T]``: target ids then ``<eos>``, then padding: what the decoder must
        predict at each position (``target_in`` shifted left by one).
    """
    if len(pairs) == 0:
        raise ValueError("encode_pairs: `pairs` is empty")
    sources, targets_in, targets_out = [], [], []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(
                f"encode_pairs: `pairs[{i}]` must be (source_tokens, target_tokens), got {pair!r}"
            )
        source, target = pair
        sources.append(source_vocab.encode(source) + [EOS_ID])
        target_ids = target_vocab.encode(target)
        targets_in.append([BOS_ID] + target_ids)
        targets_out.append(target_ids + [EOS_ID])
    source_width = _width(sources, max_source_len, "max_source_len", "source")
    target_width = _width(targets_out, max_target_len, "max_target_len", "target")
    return {
        "source": _padded(sources, source_width),
        "target_in": _padded(targets_in, target_width),
        "target_out": _padded(targets_out, target_width),
    }
