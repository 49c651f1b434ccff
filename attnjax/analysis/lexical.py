"""Word-overlap retrieval baselines: TF-IDF cosine and Okapi BM25.

What a retriever that only matches shared words scores, so that a claim "embeddings built
by attention retrieve by meaning" has a peer to beat. Both lower-case the text and split it
into runs of letters and digits (``words``); there is no stemming and no stop-word list, so
"loaf" and "loaves" are different words, as they are to any bag-of-words model.

* ``tfidf_vectors``: L2-normalised TF-IDF rows (raw counts times smooth idf
  ``log((1 + N) / (1 + df)) + 1``, scikit-learn's default), compared by cosine.
* ``bm25_scores``: Okapi BM25 (Robertson & Zaragoza 2009, "The Probabilistic Relevance
  Framework: BM25 and Beyond", eq. 3.15 with the idf of sec. 3.3), with the non-negative
  idf ``log(1 + (N - df + 0.5) / (df + 0.5))`` that Lucene uses: the plain
  Robertson/Sparck Jones weight turns negative for words in more than half the documents,
  which on a few dozen passages would make "the" count against a match.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """The lower-cased runs of letters and digits of ``text``, in order."""
    return _WORD.findall(text.lower())


def _check_texts(texts: Sequence[str], name: str) -> None:
    if isinstance(texts, str) or not len(texts):
        raise ValueError(f"`{name}` must be a non-empty sequence of strings, got {texts!r}")


def tfidf_vectors(texts: Sequence[str]) -> np.ndarray:
    """``[N, V]`` L2-normalised TF-IDF vectors of ``texts`` (vocabulary: every word of
    ``texts``, sorted); the cosine of two texts is the dot product of their rows."""
    _check_texts(texts, "texts")
    docs = [Counter(words(t)) for t in texts]
    vocab = sorted(set().union(*docs))
    index = {w: i for i, w in enumerate(vocab)}
    df = Counter(w for d in docs for w in d)
    idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab]))) + 1.0
    matrix = np.zeros((len(docs), len(vocab)))
    for row, doc in enumerate(docs):
        for word, count in doc.items():
            matrix[row, index[word]] = count * idf[index[word]]
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def bm25_scores(queries: Sequence[str], documents: Sequence[str], *, k1: float = 1.2,
                b: float = 0.75) -> np.ndarray:
    """``[Q, D]`` Okapi BM25 score of every document for every query.

    ``score(q, d) = sum over words w of q (each occurrence) of
    idf(w) * tf(w, d) * (k1 + 1) / (tf(w, d) + k1 * (1 - b + b * |d| / avgdl))``, with
    document statistics (``df``, ``|d|``, ``avgdl``) from ``documents`` only.

    Args:
      queries: the query texts.
      documents: the collection to rank.
      k1: term-frequency saturation (>= 0; 0 = presence only).
      b: document-length normalisation, in [0, 1].
    """
    _check_texts(queries, "queries")
    _check_texts(documents, "documents")
    if k1 < 0 or not 0.0 <= b <= 1.0:
        raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
    docs = [Counter(words(d)) for d in documents]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    avgdl = max(float(lengths.mean()), 1e-12)
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    norm = k1 * (1.0 - b + b * lengths / avgdl)
    scores = np.zeros((len(queries), n))
    for row, query in enumerate(queries):
        for word in words(query):
            if word not in df:
                continue
            idf = np.log(1.0 + (n - df[word] + 0.5) / (df[word] + 0.5))
            tf = np.array([d[word] for d in docs], dtype=np.float64)
            # tf = 0 adds nothing (with k1 = 0 the fraction would be 0 / 0).
            saturated = np.divide(tf * (k1 + 1.0), tf + norm, out=np.zeros_like(tf),
                                  where=tf > 0)
            scores[row] += idf * saturated
    return scores
