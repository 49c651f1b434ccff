"""A toy English -> French-like translation task whose gold word alignment is known.

Cross-attention of a trained encoder-decoder can be scored against the alignment the
generator reports. The language is built so that a good alignment is *not* the diagonal:

* adjectives follow the noun, in mirror order: ``the big red cat`` -> ``le chat rouge grand``;
* articles and adjectives agree with the noun's gender and number: ``le``/``la``/``les``,
  ``petit``/``petite``/``petits``/``petites``;
* the verb agrees in number with its subject, which may be separated from it by a relative
  clause: ``the cats that see the dog chase the hen`` ->
  ``les chats qui voient le chien chassent la poule``;
* optional negation is discontinuous and many-to-many: ``does not see`` -> ``ne voit pas``.

Real French words, ASCII only (``garcon``, ``chevre``), with a regularised grammar: every
adjective follows the noun (in French some precede it), there is no elision (``le`` and
``ne`` never become ``l'``/``n'``; the lexicon avoids vowel-initial nouns and verbs to keep
that invisible), and only the definite article is used.

Alignment convention (``Example.alignment``, pairs ``(source_index, target_index)``):
every target word is aligned to the source word(s) it translates: article <-> ``the``,
noun <-> noun (the plural is part of the word form on both sides), adjective <-> adjective,
verb <-> verb, ``qui`` <-> ``that``; under negation ``ne`` and ``pas`` <-> ``not`` and the
French verb <-> both ``does``/``do`` (which carries its number) and the bare English verb.
Without negation the alignment is one-to-one (a permutation; ``S == T``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Noun:
    english: str
    english_plural: str
    french: str
    french_plural: str
    gender: str  # "m" or "f"


@dataclass(frozen=True)
class Adjective:
    english: str
    masculine: str
    feminine: str
    masculine_plural: str
    feminine_plural: str

    def form(self, gender: str, plural: bool) -> str:
        """The French form agreeing with a noun of this gender and number."""
        if gender == "m":
            return self.masculine_plural if plural else self.masculine
        return self.feminine_plural if plural else self.feminine


@dataclass(frozen=True)
class Verb:
    english: str  # third person singular: "sees"
    english_plural: str  # plural, also the bare form after "does not": "see"
    french: str
    french_plural: str


NOUNS = (
    Noun("cat", "cats", "chat", "chats", "m"),
    Noun("dog", "dogs", "chien", "chiens", "m"),
    Noun("horse", "horses", "cheval", "chevaux", "m"),
    Noun("rabbit", "rabbits", "lapin", "lapins", "m"),
    Noun("wolf", "wolves", "loup", "loups", "m"),
    Noun("fox", "foxes", "renard", "renards", "m"),
    Noun("king", "kings", "roi", "rois", "m"),
    Noun("boy", "boys", "garcon", "garcons", "m"),
    Noun("pigeon", "pigeons", "pigeon", "pigeons", "m"),
    Noun("monkey", "monkeys", "singe", "singes", "m"),
    Noun("cow", "cows", "vache", "vaches", "f"),
    Noun("goat", "goats", "chevre", "chevres", "f"),
    Noun("hen", "hens", "poule", "poules", "f"),
    Noun("turtle", "turtles", "tortue", "tortues", "f"),
    Noun("girl", "girls", "fille", "filles", "f"),
    Noun("queen", "queens", "reine", "reines", "f"),
    Noun("duck", "ducks", "cane", "canes", "f"),
    Noun("house", "houses", "maison", "maisons", "f"),
    Noun("flower", "flowers", "fleur", "fleurs", "f"),
    Noun("apple", "apples", "pomme", "pommes", "f"),
)

ADJECTIVES = (
    Adjective("red", "rouge", "rouge", "rouges", "rouges"),
    Adjective("black", "noir", "noire", "noirs", "noires"),
    Adjective("white", "blanc", "blanche", "blancs", "blanches"),
    Adjective("green", "vert", "verte", "verts", "vertes"),
    Adjective("blue", "bleu", "bleue", "bleus", "bleues"),
    Adjective("grey", "gris", "grise", "gris", "grises"),
    Adjective("small", "petit", "petite", "petits", "petites"),
    Adjective("big", "grand", "grande", "grands", "grandes"),
    Adjective("old", "vieux", "vieille", "vieux", "vieilles"),
    Adjective("happy", "heureux", "heureuse", "heureux", "heureuses"),
)

VERBS = (
    Verb("sees", "see", "voit", "voient"),
    Verb("eats", "eat", "mange", "mangent"),
    Verb("follows", "follow", "suit", "suivent"),
    Verb("watches", "watch", "regarde", "regardent"),
    Verb("chases", "chase", "chasse", "chassent"),
    Verb("finds", "find", "trouve", "trouvent"),
    Verb("carries", "carry", "porte", "portent"),
    Verb("seeks", "seek", "cherche", "cherchent"),
)

# Definite article by (gender, plural); the plural does not mark gender, as in French.
ARTICLES = {("m", False): "le", ("f", False): "la", ("m", True): "les", ("f", True): "les"}
RELATIVE_PRONOUN = ("that", "qui")
NEGATION_AUXILIARY = {False: "does", True: "do"}


@dataclass(frozen=True)
class Example:
    """One sentence pair with its gold structure.

    Attributes:
      source: S English words.
      target: T French-like words.
      alignment: ``(source_index, target_index)`` pairs sorted by target index; every
        target index occurs.
      agreement: ``(target_index, controller_index)`` pairs, both target indices: the
        article, adjective or verb at ``target_index`` agrees with the noun at
        ``controller_index`` (its head noun, or for a verb its subject's head noun).
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    alignment: tuple[tuple[int, int], ...]
    agreement: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Phrase:
    """A fragment under construction; indices are local to the fragment."""

    source: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    alignment: tuple[tuple[int, int], ...] = ()
    agreement: tuple[tuple[int, int], ...] = ()


def _join(*phrases: _Phrase) -> _Phrase:
    """Concatenate fragments, shifting each one's indices by the words before it."""
    source, target, alignment, agreement = [], [], [], []
    for phrase in phrases:
        s, t = len(source), len(target)
        alignment += [(i + s, j + t) for i, j in phrase.alignment]
        agreement += [(i + t, j + t) for i, j in phrase.agreement]
        source += phrase.source
        target += phrase.target
    return _Phrase(tuple(source), tuple(target), tuple(alignment), tuple(agreement))


class ToyTranslation:
    """Sampler of ``Example``s: ``subject [relative clause] verb object [relative clause]``.

    Deterministic given ``seed``: two instances with the same seed and settings produce the
    same stream of examples (successive ``sample`` calls continue the stream).

    Args:
      seed: seeds the ``np.random.Generator`` that makes every choice.
      max_adjectives: each noun phrase gets 0..max_adjectives distinct adjectives (uniform).
      relative_clause_prob: chance that a subject or object noun phrase gets a relative
        clause ``that <verb> <noun phrase>``; clauses do not nest.
      plural_prob: chance that a noun is plural.
      negation_prob: chance that the main verb is negated (``does not see`` -> ``ne voit pas``).
    """

    def __init__(
        self,
        seed: int,
        *,
        max_adjectives: int = 2,
        relative_clause_prob: float = 0.3,
        plural_prob: float = 0.4,
        negation_prob: float = 0.0,
    ):
        if not 0 <= max_adjectives <= len(ADJECTIVES):
            raise ValueError(
                f"ToyTranslation: `max_adjectives` must be in [0, {len(ADJECTIVES)}], got "
                f"{max_adjectives}"
            )
        for name, p in [
            ("relative_clause_prob", relative_clause_prob),
            ("plural_prob", plural_prob),
            ("negation_prob", negation_prob),
        ]:
            if not 0 <= p <= 1:
                raise ValueError(f"ToyTranslation: `{name}` must be in [0, 1], got {p}")
        self.seed = seed
        self.max_adjectives = max_adjectives
        self.relative_clause_prob = relative_clause_prob
        self.plural_prob = plural_prob
        self.negation_prob = negation_prob
        self._rng = np.random.default_rng(seed)

    def sample(self, n: int) -> list[Example]:
        """The next ``n`` examples of the stream."""
        if n < 0:
            raise ValueError(f"ToyTranslation.sample: `n` must be >= 0, got {n}")
        return [self._sentence() for _ in range(n)]

    def _sentence(self) -> Example:
        subject, subject_plural = self._noun_phrase(allow_relative_clause=True)
        negated = bool(self._rng.random() < self.negation_prob)
        verb, verb_index = self._verb(subject_plural, negated)
        obj, _ = self._noun_phrase(allow_relative_clause=True)
        sentence = _join(subject, verb, obj)
        # The subject's head noun is always target word 1 (after its article).
        agreement = sentence.agreement + ((len(subject.target) + verb_index, 1),)
        return Example(
            source=sentence.source,
            target=sentence.target,
            alignment=tuple(sorted(sentence.alignment, key=lambda st: (st[1], st[0]))),
            agreement=tuple(sorted(agreement)),
        )

    def _noun_phrase(self, allow_relative_clause: bool) -> tuple[_Phrase, bool]:
        """``the adj_1 .. adj_k noun`` -> ``article noun adj_k .. adj_1`` [+ relative clause].

        Returns the phrase (head noun at target word 1) and whether the noun is plural.
        """
        rng = self._rng
        noun = NOUNS[rng.integers(len(NOUNS))]
        plural = bool(rng.random() < self.plural_prob)
        k = int(rng.integers(self.max_adjectives + 1))
        adjectives = [ADJECTIVES[i] for i in rng.choice(len(ADJECTIVES), size=k, replace=False)]
        source = (
            "the",
            *(adjective.english for adjective in adjectives),
            noun.english_plural if plural else noun.english,
        )
        target = (
            ARTICLES[noun.gender, plural],
            noun.french_plural if plural else noun.french,
            *(adjective.form(noun.gender, plural) for adjective in reversed(adjectives)),
        )
        # Source adjective 1 + i is target word 2 + (k - 1 - i): the mirror image.
        alignment = ((0, 0), (k + 1, 1), *((1 + i, k + 1 - i) for i in range(k)))
        agreement = ((0, 1), *((2 + i, 1) for i in range(k)))
        phrase = _Phrase(source, target, alignment, agreement)
        if allow_relative_clause and rng.random() < self.relative_clause_prob:
            clause, clause_verb_index = self._relative_clause(plural)
            phrase = _join(phrase, clause)
            verb_agreement = (len(target) + clause_verb_index, 1)
            phrase = replace(phrase, agreement=phrase.agreement + (verb_agreement,))
        return phrase, plural

    def _relative_clause(self, head_plural: bool) -> tuple[_Phrase, int]:
        """``that <verb> <noun phrase>`` -> ``qui <verb> <noun phrase>``.

        The relative pronoun is the clause's subject, so the verb agrees with the head noun
        the clause modifies. Returns the clause and its verb's target index.
        """
        pronoun = _Phrase(RELATIVE_PRONOUN[:1], RELATIVE_PRONOUN[1:], ((0, 0),))
        verb, verb_index = self._verb(head_plural, negated=False)
        obj, _ = self._noun_phrase(allow_relative_clause=False)
        return _join(pronoun, verb, obj), len(pronoun.target) + verb_index

    def _verb(self, plural: bool, negated: bool) -> tuple[_Phrase, int]:
        """The verb agreeing with a subject of this number; returns it and its target index."""
        verb = VERBS[self._rng.integers(len(VERBS))]
        french = verb.french_plural if plural else verb.french
        if not negated:
            english = verb.english_plural if plural else verb.english
            return _Phrase((english,), (french,), ((0, 0),)), 0
        # does not see -> ne voit pas: "not" is split around the verb, and the French verb
        # translates both the auxiliary (which carries number) and the bare English verb.
        phrase = _Phrase(
            (NEGATION_AUXILIARY[plural], "not", verb.english_plural),
            ("ne", french, "pas"),
            ((1, 0), (0, 1), (2, 1), (1, 2)),
        )
        return phrase, 1


def gold_alignment_matrix(example: Example, normalize: bool = True) -> np.ndarray:
    """``[T, S]`` float32 matrix of ``example.alignment``, shaped like cross-attention weights.

    Row ``t`` (target word t) has a 1 at every source word aligned to it, divided by their
    number when ``normalize`` so that rows sum to 1 like attention distributions. Indices are
    word positions without ``<bos>``/``<eos>``: row t lines up with the decoder step that
    predicts target word t (row t of ``target_out``), column s with ``source`` position s.
    """
    matrix = np.zeros((len(example.target), len(example.source)), np.float32)
    for s, t in example.alignment:
        matrix[t, s] = 1.0
    if normalize:
        matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    return matrix


def train_test_split(
    examples: Sequence[Example], test_fraction: float = 0.2, *, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split so that no held-out source sentence occurs in training.

    Distinct source sentences (not examples) are shuffled with ``seed`` and a
    ``test_fraction`` of them (rounded) is held out; every copy of a held-out sentence goes
    to test. Since the target is a function of the source, targets are disjoint too. Both
    lists keep the input order.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"train_test_split: `test_fraction` must be in (0, 1), got {test_fraction}"
        )
    sentences = list(dict.fromkeys(example.source for example in examples))
    order = np.random.default_rng(seed).permutation(len(sentences))
    held_out = {sentences[i] for i in order[: round(test_fraction * len(sentences))]}
    train = [example for example in examples if example.source not in held_out]
    test = [example for example in examples if example.source in held_out]
    return train, test
