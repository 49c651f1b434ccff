"""A toy sentiment task whose answer sits in one or two known tokens.

``[CLS, w_1 .. w_L]``: neutral filler words and exactly one polarity word (positive or
negative) at a random position; with probability ``negation_rate`` the word just before it
is "not", which flips the label. So the gold evidence is known: the polarity word (and the
"not" before it, when there is one). Used by ``experiments/explanation.py``.

With ``distractor_rate > 0``, that fraction of sentences also gets a "not" somewhere else
(never just before the polarity word): then whether a "not" occurs decides nothing, only
where it sits does, so a bag of words (e.g. uniform attention) cannot solve the task.
"""

from __future__ import annotations

import numpy as np

PAD_ID, CLS_ID, NOT_ID = 0, 1, 2


class SentimentTask:
    """Vocabulary: PAD, CLS, "not", ``num_neutral`` fillers, ``num_polar`` positive and as
    many negative words."""

    def __init__(self, *, length: int = 12, num_neutral: int = 40, num_polar: int = 8,
                 negation_rate: float = 0.3, distractor_rate: float = 0.0):
        if length < 3:
            raise ValueError(f"SentimentTask: `length` must be >= 3, got {length}")
        for name, rate in (("negation_rate", negation_rate), ("distractor_rate", distractor_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"SentimentTask: `{name}` must be in [0, 1], got {rate}")
        self.length, self.negation_rate = length, negation_rate
        self.distractor_rate = distractor_rate
        self.neutral = np.arange(3, 3 + num_neutral)
        self.positive = np.arange(3 + num_neutral, 3 + num_neutral + num_polar)
        self.negative = np.arange(3 + num_neutral + num_polar, 3 + num_neutral + 2 * num_polar)
        self.vocab_size = int(self.negative[-1]) + 1
        self.words = (["<pad>", "<cls>", "not"] + [f"n{i}" for i in range(num_neutral)]
                      + [f"good{i}" for i in range(num_polar)]
                      + [f"bad{i}" for i in range(num_polar)])

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``tokens [n, 1 + L]``, ``label [n]`` (1 positive), ``position [n]`` (0: CLS),
        ``polar [n]`` and ``negation [n]`` (the index of the "not" that negates, or -1)."""
        tokens = np.full((n, 1 + self.length), CLS_ID, np.int32)
        tokens[:, 1:] = rng.choice(self.neutral, size=(n, self.length))
        polar = rng.integers(2, 1 + self.length, size=n)  # room for a "not" before it
        positive = rng.random(n) < 0.5
        words = np.where(positive, rng.choice(self.positive, n), rng.choice(self.negative, n))
        tokens[np.arange(n), polar] = words
        negated = rng.random(n) < self.negation_rate
        tokens[np.arange(n)[negated], polar[negated] - 1] = NOT_ID
        if self.distractor_rate > 0:  # drawn only then: the stream without is unchanged
            distract = np.flatnonzero(rng.random(n) < self.distractor_rate)
            for i in distract:  # any word position but the polarity word and the one before
                free = [p for p in range(1, 1 + self.length) if p not in (polar[i], polar[i] - 1)]
                tokens[i, rng.choice(free)] = NOT_ID
        return {"tokens": tokens, "label": (positive ^ negated).astype(np.int32),
                "position": np.zeros(n, np.int32), "polar": polar.astype(np.int32),
                "negation": np.where(negated, polar - 1, -1).astype(np.int32)}
