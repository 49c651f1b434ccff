"""From word pieces to words: which word each piece belongs to, and word-level attention
and vectors (Clark et al. 2019, "What Does BERT Look At?", sec. 4.1).

A treebank annotates words, a model reads word pieces. Clark et al. convert a token-token
attention map into a word-word map by *summing* the attention a query gives to the pieces
of an attended word (the weight on the word) and *averaging* over the pieces of the
attending word (each piece is a query of its own), so each word's row still sums to at most
1 (exactly 1 less the weight on special tokens such as ``[CLS]``). Vectors of a split word
are the mean of its pieces' vectors, as in probing work.

    piece_word = piece_words(encoding.offsets, text, spans)   # [T], -1: no word
    words_attn = word_attention(attention, piece_word, len(spans))   # [..., W, W]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def piece_words(offsets: Sequence[tuple[int, int]], text: str,
                spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """``[T]`` the index of the word each piece belongs to, -1 for pieces of no word.

    Args:
      offsets: ``[T]`` each piece's character span in ``text`` (a ``tokenizers`` encoding's
        ``offsets``; special tokens have an empty span).
      text: the string the pieces were cut from.
      spans: ``[W]`` each word's character span ``[start, end)`` in ``text``, in order and
        disjoint (``attnjax.data.conllu.word_spans``).

    A piece belongs to the word that holds its first non-space character (a byte-level BPE
    piece carries the space before a word: ``"Ġnominated"``); a piece of only whitespace,
    or an empty span, belongs to none.
    """
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    if np.any(ends < starts) or np.any(starts[1:] < ends[:-1]):
        raise ValueError(f"piece_words: `spans` must be ordered, disjoint [start, end) spans, "
                         f"got {list(spans)}")
    out = np.full(len(offsets), -1, dtype=np.int64)
    for t, (start, end) in enumerate(offsets):
        while start < end and text[start].isspace():
            start += 1
        if start >= end:
            continue
        w = int(np.searchsorted(starts, start, side="right")) - 1
        if w >= 0 and start < ends[w]:
            out[t] = w
    return out


def _membership(piece_word: np.ndarray, num_words: int, name: str) -> np.ndarray:
    piece_word = np.asarray(piece_word)
    if piece_word.ndim != 1 or not np.issubdtype(piece_word.dtype, np.integer):
        raise ValueError(f"`{name}` must be a 1-D integer array [T], got shape "
                         f"{list(piece_word.shape)} dtype {piece_word.dtype}")
    if piece_word.size and (piece_word.min() < -1 or piece_word.max() >= num_words):
        raise ValueError(f"`{name}` must hold word indices in [-1, {num_words}), got "
                         f"[{piece_word.min()}, {piece_word.max()}]")
    one_hot = np.zeros((num_words, piece_word.size))
    rows = piece_word >= 0
    one_hot[piece_word[rows], np.flatnonzero(rows)] = 1.0
    return one_hot  # [W, T]


def word_attention(attention: np.ndarray, query_words: np.ndarray, num_words: int,
                   key_words: np.ndarray | None = None) -> np.ndarray:
    """Word-level attention ``[..., W, W]`` from piece-level ``attention [..., T, S]``.

    Args:
      attention: ``[..., T, S]`` attention weights (rows: queries).
      query_words: ``[T]`` the word of each query piece (``piece_words``; -1: none).
      num_words: ``W``.
      key_words: ``[S]`` the word of each key piece (default: ``query_words``, for
        self-attention).

    Returns:
      ``[..., W, W]``: entry ``(i, j)`` is the mean over word ``i``'s pieces of their total
      attention on word ``j``'s pieces; a word without pieces gets a zero row.
    """
    attention = np.asarray(attention)
    key_words = query_words if key_words is None else key_words
    q = _membership(query_words, num_words, "query_words")
    k = _membership(key_words, num_words, "key_words")
    if attention.shape[-2:] != (q.shape[1], k.shape[1]):
        raise ValueError(f"word_attention: `attention` must end in [T={q.shape[1]}, "
                         f"S={k.shape[1]}], got {list(attention.shape)}")
    q = q / np.maximum(q.sum(axis=1, keepdims=True), 1.0)  # mean over the query pieces
    return (q @ attention) @ k.T


def word_vectors(hidden: np.ndarray, piece_word: np.ndarray, num_words: int) -> np.ndarray:
    """``[..., W, D]`` the mean of each word's piece vectors from ``hidden [..., T, D]``
    (a word without pieces gets zeros)."""
    hidden = np.asarray(hidden)
    m = _membership(piece_word, num_words, "piece_word")
    if hidden.shape[-2] != m.shape[1]:
        raise ValueError(f"word_vectors: `hidden` must be [..., T={m.shape[1]}, D], got "
                         f"{list(hidden.shape)}")
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    return m @ hidden


def encode_words(model, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                 batch_size: int = 32, max_pieces: int = 128, prefix_ids: Sequence[int] = ()):
    """Runs ``model`` over ``texts`` and yields word-level attention and vectors, a batch
    at a time (so a treebank's worth never sits in memory at once).

    Args:
      model: a loaded ``attnjax.pretrained`` model: ``PretrainedEncoder`` (``load_bert``) or
        ``CausalLM`` (``load_llama``); it needs ``tokenizer`` (a ``tokenizers.Tokenizer``)
        and ``encode(texts, attention=True)``.
      texts: ``[N]`` sentences.
      spans: ``[N]`` each sentence's word spans (``attnjax.data.conllu.word_spans``).
      batch_size: sentences per forward pass; sentences are sorted by length first, so
        each batch pads little and few shapes compile.
      max_pieces: sentences with more pieces (special tokens included) are skipped.
      prefix_ids: token ids put before every sentence (a causal LM's document separator,
        so that the first word is not the attention sink); they belong to no word. Needs a
        model whose ``encode`` takes token ids (``CausalLM``).

    Yields:
      ``(index, attention, vectors)`` per sentence, in length order: ``index`` into
      ``texts``, ``attention`` ``[L, H, W, W]`` word-level (``word_attention``) and
      ``vectors`` ``[L + 1, W, D]`` word vectors of the embeddings and every layer
      (``word_vectors``).
    """
    if len(texts) != len(spans):
        raise ValueError(f"encode_words: {len(texts)} texts but {len(spans)} span lists")
    encodings = [model.tokenizer.encode(t) for t in texts]
    order = [i for i in np.argsort([len(e.ids) for e in encodings], kind="stable")
             if len(encodings[i].ids) + len(prefix_ids) <= max_pieces]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if prefix_ids:
            encoded = model.encode([list(prefix_ids) + list(encodings[i].ids) for i in index],
                                   attention=True)
        else:
            encoded = model.encode([texts[i] for i in index], attention=True)
        for row, i in enumerate(index):
            n = len(prefix_ids) + len(encodings[i].ids)
            pw = np.concatenate([np.full(len(prefix_ids), -1, np.int64),
                                 piece_words(encodings[i].offsets, texts[i], spans[i])])
            words = len(spans[i])
            attention = encoded.attention[:, row, :, :n, :n]
            vectors = encoded.hidden_states[:, row, :n]
            yield (int(i), word_attention(attention, pw, words).astype(np.float32),
                   word_vectors(vectors, pw, words).astype(np.float32))
