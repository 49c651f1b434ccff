"""Winograd-style pronoun resolution and subject-verb agreement, with controllable distance.

The seed example: "The trophy didn't fit in the suitcase because it was too big." The
referent of ``it`` flips with one word (``big`` -> trophy, ``small`` -> suitcase), and which
way it flips depends on the relation: in "the suitcase could not hold the trophy because it
was too small" ``small`` points at the *first* noun. So every *family* below pairs two
relations of opposite polarity over one pair of property poles, and a model must combine
the relation (early in the sentence) with the property (at its end) to find the antecedent:
neither the nouns, nor the word order, nor the property alone decides it.

Generalisation, not memory, is what the test split measures:

* **held-out noun pairs**: a fixed fraction of each family's (first, second) noun pairs
  never appears in training (the nouns themselves do, in other pairs); the seed sentences'
  pairs (trophy/suitcase, Arjun/pizza) are always held out;
* **held-out templates**: one surface form of every relation appears only in the test split.
  It recombines words that training shows for that relation ("{a} defeated {b} in the race"
  when training has "defeated ... in the match" and "beat ... in the race"), or adds an
  adverb seen elsewhere ("the {a} quickly chased the {b}"): a verb never seen in training
  would leave the relation's polarity unknowable, not test generalisation.

Distance: ``filler_tokens`` neutral tokens (comma-delimited adverbial phrases, "after the
long trip home", "on that cold morning") go between the main clause and "because", so both
candidates move away from the pronoun by the same amount.

``AgreementTask``: "the old man who lived next to the parks where the children played ...
``<verb>``": predict the number of the verb's subject across attractors (nouns of the other
number) at controllable distance (Linzen et al. 2016).

Everything is deterministic given the seed; each example records the positions a probe
needs (pronoun, both candidates, gold antecedent).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attnjax.data.vocab import PAD_ID, Vocab

# --------------------------------------------------------------------------- lexicon

OBJECTS = (  # things that go into containers
    "trophy", "ball", "book", "laptop", "guitar", "lamp", "vase", "bottle", "shoe", "helmet",
    "camera", "pillow", "clock", "painting", "statue", "kettle", "radio", "jacket",
)
CONTAINERS = (
    "suitcase", "bag", "box", "drawer", "backpack", "basket", "cupboard", "case", "crate",
    "bucket", "trunk", "closet", "envelope", "locker",
)
MALE_NAMES = ("arjun", "ben", "omar", "hiro", "carlos", "ivan", "tom", "kofi", "liam", "ravi",
              "paul", "mateo")
FEMALE_NAMES = ("maria", "aisha", "yuki", "sara", "elena", "priya", "anna", "fatima", "mei",
                "zoe", "lucy", "nina")
ANIMALS = ("cat", "mouse", "dog", "fox", "rabbit", "wolf", "deer", "bear", "goat", "hen",
           "owl", "snake", "lion", "horse")
FOODS = ("pizza", "sandwich", "soup", "cake", "salad", "apple", "pie", "curry", "bread",
         "pasta", "burger", "stew")

# Property poles: any synonym of a pole points the same way.
POLES = {
    "big": ("big", "large", "huge", "wide"),
    "small": ("small", "tiny", "narrow"),
    "strong": ("strong", "powerful", "fit"),
    "weak": ("weak", "tired", "sick"),
    "predator": ("hungry", "dangerous", "fierce"),
    "prey": ("scared", "afraid", "frightened"),
    "eater": ("hungry", "starving"),
    "food": ("delicious", "tasty"),
}


@dataclass(frozen=True)
class Relation:
    """One relation: surface templates with slots ``{a}`` and ``{b}``, and which slot
    (0 = ``{a}``, 1 = ``{b}``) each property pole points to. A template may put ``{b}``
    first ("the {b} couldn't hold the {a}"): the example's label is in sentence order."""

    name: str
    templates: tuple[str, ...]  # the last one is held out for the test split
    poles: dict  # pole -> 0 | 1 (the referent)


@dataclass(frozen=True)
class Family:
    """Relations over one pair of noun sets and one pair of poles, of opposite polarity."""

    name: str
    first: tuple[str, ...]  # nouns of the first slot
    second: tuple[str, ...]
    relations: tuple[Relation, ...]
    pronoun: str = "it"  # "he"/"she" follows the names' gender
    article: bool = True  # "the trophy" (objects) vs bare names


FAMILIES = (
    Family(
        "containment", OBJECTS, CONTAINERS,
        (
            Relation(
                "fit",
                (
                    "the {a} didn't fit in the {b}",
                    "the {a} did not fit into the {b}",
                    "the {a} would not go into the {b}",
                    "the {a} did not fit in the {b}",
                ),
                {"big": 0, "small": 1},
            ),
            Relation(
                "hold",
                (
                    "the {b} couldn't hold the {a}",
                    "the {b} could not contain the {a}",
                    "the {b} was unable to hold the {a}",
                    "the {b} could not hold the {a}",
                ),
                {"big": 0, "small": 1},  # the {a} is too big, the {b} too small
            ),
        ),
    ),
    Family(
        "contest", MALE_NAMES + FEMALE_NAMES, MALE_NAMES + FEMALE_NAMES,
        (
            Relation(
                "beat",
                (
                    "{a} beat {b} in the race",
                    "{a} defeated {b} in the match",
                    "{a} won against {b} in the game",
                    "{a} defeated {b} in the race",
                ),
                {"strong": 0, "weak": 1},
            ),
            Relation(
                "lost",
                (
                    "{a} lost to {b} in the race",
                    "{a} was defeated by {b} in the match",
                    "{a} could not keep up with {b} in the game",
                    "{a} lost to {b} in the match",
                ),
                {"strong": 1, "weak": 0},
            ),
        ),
        pronoun="he/she",
        article=False,
    ),
    Family(
        "chase", ANIMALS, ANIMALS,
        (
            Relation(
                "chased",
                (
                    "the {a} chased the {b}",
                    "the {a} hunted the {b}",
                    "the {a} ran after the {b}",
                    "the {a} quickly chased the {b}",
                ),
                {"predator": 0, "prey": 1},
            ),
            Relation(
                "fled",
                (
                    "the {a} ran away from the {b}",
                    "the {a} hid from the {b}",
                    "the {a} escaped from the {b}",
                    "the {a} quickly ran away from the {b}",
                ),
                {"predator": 1, "prey": 0},
            ),
        ),
    ),
    # The seed's second sentence: here the pronoun's animacy decides (he/she vs it).
    Family(
        "meal", MALE_NAMES + FEMALE_NAMES, FOODS,
        (
            Relation(
                "ate",
                (
                    "{a} ate the {b}",
                    "{a} finished the {b}",
                    "{a} quickly ate the {b}",
                    "{a} quickly finished the {b}",
                ),
                {"eater": 0, "food": 1},
            ),
        ),
        pronoun="he/she",
        article=False,
    ),
)

FILLERS = (  # neutral adverbial phrases; none contains a candidate noun
    "again", "today", "then", "indeed", "sadly", "once more", "as usual", "last night",
    "after all", "that morning", "of course", "in the end", "to be honest", "much to our surprise",
    "after the long trip home", "on that cold and rainy morning", "as everyone had expected",
    "despite several careful attempts", "according to the old man next door",
    "just before the guests arrived", "while the music was playing downstairs",
    "even though nobody was really watching", "in the middle of a very busy week",
    "as the neighbours later told the police", "long after the sun had gone down",
)

SEED_SENTENCES = (
    "the trophy didn't fit in the suitcase because it was too big .",
    "arjun ate the pizza because he was hungry .",
)


def tokenize(text: str) -> list[str]:
    """Lower-case, split on spaces, commas and full stops as their own tokens."""
    return text.lower().replace(",", " , ").replace(".", " . ").split()


# --------------------------------------------------------------------------- coreference


@dataclass(frozen=True)
class CorefExample:
    """A sentence with a pronoun, two candidate antecedents and the gold one.

    Attributes:
      tokens: the words.
      pronoun: index of the pronoun.
      candidates: indices of the first and second candidate nouns (in sentence order).
      label: 0 or 1, which candidate the pronoun refers to.
      family, relation, template: what generated it (``template`` indexes the relation's).
      filler_tokens: neutral tokens between the main clause and "because".
      pole: the property pole ("big", "small", ...).
    """

    tokens: tuple[str, ...]
    pronoun: int
    candidates: tuple[int, int]
    label: int
    family: str
    relation: str
    template: int
    filler_tokens: int
    pole: str

    @property
    def antecedent(self) -> int:
        """Index of the gold antecedent."""
        return self.candidates[self.label]

    @property
    def distance(self) -> int:
        """Tokens from the gold antecedent to the pronoun."""
        return self.pronoun - self.antecedent

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def _pair_is_held_out(family: str, a: str, b: str, fraction: float) -> bool:
    # Unordered: "the cat chased the fox" and "the fox chased the cat" are the same pair.
    a, b = sorted((a, b))
    if (a, b) in (("suitcase", "trophy"), ("arjun", "pizza")):
        return True
    # A stable hash, not Python's salted hash(): the split must not change between runs.
    return zlib.crc32(f"{family}|{a}|{b}".encode()) % 1000 < fraction * 1000


def _filler(rng: np.random.Generator, n: int) -> list[str]:
    """Exactly ``n`` tokens of neutral phrases, each closed by a comma (commas count):
    ``", after the long trip home , sadly ,"``."""
    if n == 0:
        return []
    if n == 2:
        return [",", "then"]
    tokens: list[str] = [","]
    while len(tokens) < n:
        room = n - len(tokens)
        # a phrase plus its comma, never leaving room for exactly one more token
        fits = [f for f in FILLERS if len(f.split()) + 1 <= room and room - len(f.split()) != 2]
        tokens.extend(str(rng.choice(fits)).split() + [","])
    return tokens


class CoreferenceTask:
    """Seeded sampler of ``CorefExample``s with held-out noun pairs and templates.

    Args:
      seed: everything is a function of it.
      held_out_pair_fraction: fraction of each family's noun pairs kept for the test split.
    """

    def __init__(self, seed: int = 0, held_out_pair_fraction: float = 0.2):
        self.seed = seed
        self.held_out_pair_fraction = held_out_pair_fraction
        self._pairs = {}
        for family in FAMILIES:
            pairs = [
                (a, b)
                for a in family.first
                for b in family.second
                if a != b and self._same_gender(family, a, b)
            ]
            held = [p for p in pairs if _pair_is_held_out(family.name, *p, held_out_pair_fraction)]
            kept = [p for p in pairs if p not in set(held)]
            self._pairs[family.name] = {"train": kept, "test": held}

    @staticmethod
    def _same_gender(family: Family, a: str, b: str) -> bool:
        # Two people of one gender, so that "he"/"she" cannot tell them apart.
        if family.name != "contest":
            return True
        return (a in MALE_NAMES) == (b in MALE_NAMES)

    def pairs(self, family: str, split: str) -> list[tuple[str, str]]:
        return list(self._pairs[family][split])

    def vocabulary(self) -> Vocab:
        """Every token the task can produce (so any split, and the seeds, encode)."""
        words = {",", ".", "because", "it", "he", "she", "was", "too", "the"}
        for family in FAMILIES:
            words.update(family.first + family.second)
            for relation in family.relations:
                for template in relation.templates:
                    words.update(tokenize(template.format(a="x", b="x")))
                for pole in relation.poles:
                    words.update(POLES[pole])
        for phrase in FILLERS:
            words.update(phrase.split())
        words.discard("x")
        return Vocab.build([sorted(words)])

    def sample(
        self,
        n: int,
        split: str = "train",
        *,
        filler_tokens: int | Sequence[int] = 0,
        stream: int = 0,
    ) -> list[CorefExample]:
        """``n`` examples of ``split`` (``"train"`` or ``"test"``).

        Args:
          filler_tokens: one distance, or a sequence to draw uniformly from per example.
          stream: independent draws of the same split (e.g. 0 = train, 1 = validation).

        The test split uses held-out noun pairs only, and a held-out template for half of
        its examples; the train split never uses either. Families, relations and poles are
        balanced in expectation, so always answering "first" scores 50%.
        """
        if split not in ("train", "test"):
            raise ValueError(f"sample: `split` must be 'train' or 'test', got {split!r}")
        distances = np.atleast_1d(np.asarray(filler_tokens, dtype=int))
        if distances.ndim != 1 or distances.size == 0 or (distances < 0).any():
            raise ValueError(
                f"sample: `filler_tokens` must be a non-negative int or a non-empty sequence "
                f"of them, got {filler_tokens!r}"
            )
        rng = np.random.default_rng([self.seed, {"train": 0, "test": 1}[split], stream])
        return [self._example(rng, split, int(rng.choice(distances))) for _ in range(n)]

    def _example(self, rng: np.random.Generator, split: str, filler: int) -> CorefExample:
        family = FAMILIES[rng.integers(len(FAMILIES))]
        relation = family.relations[rng.integers(len(family.relations))]
        pairs = self._pairs[family.name][split]
        a, b = pairs[rng.integers(len(pairs))]
        last = len(relation.templates) - 1
        if split == "train":
            template = int(rng.integers(last))
        else:
            template = last if rng.random() < 0.5 else int(rng.integers(last))
        pole = list(relation.poles)[rng.integers(len(relation.poles))]
        prop = str(rng.choice(POLES[pole]))
        referent = relation.poles[pole]
        clause = relation.templates[template].format(a=a, b=b)
        pronoun = family.pronoun
        if pronoun == "he/she":
            person = (a, b)[referent] if family.name == "contest" else a
            pronoun = "he" if person in MALE_NAMES else "she"
            if family.name == "meal" and referent == 1:
                pronoun = "it"
        clause_tokens = tokenize(clause)
        # Candidates in sentence order (templates may put {b} first, e.g. "hold").
        order = sorted([(clause_tokens.index(a), 0), (_rindex(clause_tokens, b), 1)])
        slot_of_first = order[0][1]
        label = 0 if referent == slot_of_first else 1
        too = ["too"] if pole in ("big", "small") else []
        tokens = clause_tokens + _filler(rng, filler) + ["because", pronoun, "was"] + too + [
            prop, "."
        ]
        return CorefExample(
            tokens=tuple(tokens),
            pronoun=len(clause_tokens) + filler + 1,
            candidates=(order[0][0], order[1][0]),
            label=label,
            family=family.name,
            relation=relation.name,
            template=template,
            filler_tokens=filler,
            pole=pole,
        )


def uses_held_out_template(example: CorefExample) -> bool:
    """Whether ``example`` uses its relation's held-out (test-only) template, the last one."""
    family = next(f for f in FAMILIES if f.name == example.family)
    relation = next(r for r in family.relations if r.name == example.relation)
    return example.template == len(relation.templates) - 1


def _rindex(tokens: list[str], word: str) -> int:
    return len(tokens) - 1 - tokens[::-1].index(word)


def parse_seed(text: str) -> CorefExample:
    """A ``CorefExample`` for one of ``SEED_SENTENCES``, or any sentence of the task's shape
    ("<clause of a template> [filler] because <pronoun> was [too] <property> ."): the label
    follows the task's rules."""
    tokens = tokenize(text)
    if "because" not in tokens:
        raise ValueError(f"parse_seed: {text!r} has no 'because'")
    because = tokens.index("because")
    pronoun, prop = because + 1, tokens[-2] if tokens[-1] == "." else tokens[-1]
    for family in FAMILIES:
        for relation in family.relations:
            for t, template in enumerate(relation.templates):
                words = tokenize(template.format(a="\0", b="\0"))
                if len(words) > because or not _matches(words, tokens[: len(words)]):
                    continue
                slots = [i for i, w in enumerate(words) if w == "\0"]
                if not {tokens[i] for i in slots} <= set(family.first + family.second):
                    continue
                for pole, referent in relation.poles.items():
                    if prop not in POLES[pole]:
                        continue
                    if family.name == "meal" and (tokens[pronoun] == "it") != bool(referent):
                        continue  # the pronoun's animacy names the referent there
                    a_first = template.index("{a}") < template.index("{b}")
                    return CorefExample(
                        tuple(tokens), pronoun, (slots[0], slots[1]),
                        referent if a_first else 1 - referent, family.name, relation.name,
                        t, because - len(words), pole,
                    )
    raise ValueError(f"parse_seed: {text!r} matches no template of the task")


def _matches(pattern: list[str], tokens: list[str]) -> bool:
    return len(pattern) == len(tokens) and all(
        p == "\0" or p == t for p, t in zip(pattern, tokens, strict=True)
    )


def encode(examples: Sequence[CorefExample], vocab: Vocab, length: int | None = None) -> dict:
    """Padded int32 arrays: ``tokens [N, L]`` (``PAD_ID`` right padding), ``pronoun [N]``,
    ``candidates [N, 2]`` (positions), ``choices [N, 2]`` (their token ids), ``label [N]``,
    ``last [N]`` (index of the last real token), ``filler_tokens [N]``."""
    longest = max(len(e.tokens) for e in examples)
    length = length or longest
    if length < longest:
        raise ValueError(
            f"encode: `length`={length} is shorter than the longest example ({longest})"
        )
    tokens = np.full((len(examples), length), PAD_ID, np.int32)
    for i, e in enumerate(examples):
        tokens[i, : len(e.tokens)] = vocab.encode(e.tokens)
    return {
        "tokens": tokens,
        "pronoun": np.array([e.pronoun for e in examples], np.int32),
        "candidates": np.array([e.candidates for e in examples], np.int32),
        # The candidates' token ids: a classifier over the vocabulary picks among them.
        "choices": np.take_along_axis(tokens, np.array([e.candidates for e in examples]), 1),
        "label": np.array([e.label for e in examples], np.int32),
        "last": np.array([len(e.tokens) - 1 for e in examples], np.int32),
        "filler_tokens": np.array([e.filler_tokens for e in examples], np.int32),
    }


# --------------------------------------------------------------------------- agreement

SINGULAR_NOUNS = ("man", "woman", "dog", "teacher", "child", "farmer", "doctor", "girl", "boy",
                  "singer")
PLURAL_NOUNS = ("men", "women", "dogs", "teachers", "children", "farmers", "doctors", "girls",
                "boys", "singers")
PLURAL_PLACES = ("parks", "houses", "shops", "gardens", "streets")
SINGULAR_PLACES = ("park", "house", "shop", "garden", "street")
ADJECTIVES = ("old", "young", "tall", "quiet", "kind")
VERB_FORMS = (("falls", "fall"), ("sings", "sing"), ("laughs", "laugh"), ("smiles", "smile"))


@dataclass(frozen=True)
class AgreementExample:
    """A subject, attractor clauses, then the verb slot (the sentence stops before the verb).

    Attributes:
      tokens: the words up to (not including) the verb.
      subject: index of the subject noun.
      attractors: indices of intervening nouns of the other number.
      plural: the subject's (and so the verb's) number; the label.
      verbs: ``(singular, plural)`` forms of the verb for display.
    """

    tokens: tuple[str, ...]
    subject: int
    attractors: tuple[int, ...]
    plural: bool
    verbs: tuple[str, str]

    @property
    def distance(self) -> int:
        """Tokens from the subject to the verb slot."""
        return len(self.tokens) - self.subject


class AgreementTask:
    """Seeded sampler: "the old man who lived next to the parks where the children played
    ... suddenly" -> ``falls`` (singular) vs ``fall`` (plural)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def vocabulary(self) -> Vocab:
        words = {"the", "who", "lived", "next", "to", "where", "played", "suddenly", "near"}
        words.update(SINGULAR_NOUNS + PLURAL_NOUNS + PLURAL_PLACES + SINGULAR_PLACES + ADJECTIVES)
        return Vocab.build([sorted(words)])

    def sample(self, n: int, *, num_attractors: int | Sequence[int] = 1,
               stream: int = 0) -> list[AgreementExample]:
        counts = np.atleast_1d(np.asarray(num_attractors, dtype=int))
        rng = np.random.default_rng([self.seed, 2, stream])
        return [self._example(rng, int(rng.choice(counts))) for _ in range(n)]

    def _example(self, rng: np.random.Generator, attractors: int) -> AgreementExample:
        plural = bool(rng.integers(2))
        subject_noun = str(rng.choice(PLURAL_NOUNS if plural else SINGULAR_NOUNS))
        tokens = ["the", str(rng.choice(ADJECTIVES)), subject_noun]
        subject = 2
        positions = []
        # Each attractor clause holds a noun of the other number: "who lived next to the
        # parks" / "where the children played".
        for k in range(attractors):
            if k % 2 == 1:
                tokens += ["where", "the"]
                tokens.append(str(rng.choice(SINGULAR_NOUNS if plural else PLURAL_NOUNS)))
                positions.append(len(tokens) - 1)
                tokens.append("played")
                continue
            tokens += ["who", "lived", "next", "to", "the"] if k == 0 else ["near", "the"]
            tokens.append(str(rng.choice(SINGULAR_PLACES if plural else PLURAL_PLACES)))
            positions.append(len(tokens) - 1)
        tokens.append("suddenly")
        verbs = VERB_FORMS[rng.integers(len(VERB_FORMS))]
        return AgreementExample(tuple(tokens), subject, tuple(positions), plural, verbs)


def max_length(filler_tokens: int) -> int:
    """The longest sentence the task can produce with ``filler_tokens`` filler tokens
    (clause, filler, "because <pronoun> was too <property> .")."""
    clause = max(len(tokenize(t.format(a="x", b="x")))
                 for f in FAMILIES for r in f.relations for t in r.templates)
    return clause + filler_tokens + 6


def make_datasets(config, seed: int | None = None) -> dict:
    """Train set (fillers drawn from 0..max), validation (held-in pairs), test sets per
    distance and the seed sentences, encoded to one common length, from an experiment config
    (``config.task.*``, ``config.readout``).

    Args:
      seed: the data draw (``SeedRngs(s).int("data_draw")`` in a seeded run); default
        ``config.seed``. The held-out pairs and templates do not depend on it.
    """
    task = CoreferenceTask(config.seed if seed is None else seed,
                           config.task.held_out_pair_fraction)
    vocab = task.vocabulary()
    distances = tuple(config.task.test_distances)
    train_examples = task.sample(
        config.task.num_train, "train", filler_tokens=range(config.task.max_filler + 1)
    )
    test_examples = {d: task.sample(config.task.num_test, "test", filler_tokens=d, stream=d)
                     for d in distances}
    # Heads are chosen on held-in sentences, then scored on the held-out test sets.
    validation = task.sample(
        config.task.num_test, "train", filler_tokens=range(config.task.max_filler + 1), stream=1
    )
    seeds = [parse_seed(s) for s in SEED_SENTENCES]
    # One length for every seed's draw, so that seeds stack into one vmapped program.
    length = max_length(max(config.task.max_filler, *distances))

    def arrays(examples):
        return readout_arrays(encode(examples, vocab=vocab, length=length), config.readout)

    return {
        "task": task,
        "vocab": vocab,
        "length": length,
        "train": arrays(train_examples),
        "validation": arrays(validation),
        "test": {d: arrays(es) for d, es in test_examples.items()},
        "test_examples": test_examples,
        "seeds": seeds,
        "seed_arrays": arrays(seeds),
    }


def readout_arrays(arrays: dict, readout: str) -> dict:
    """``arrays`` with ``choices`` (the candidates' ids) only for the identity readout."""
    if readout not in ("position", "identity"):
        raise ValueError(f"config.readout must be 'position' or 'identity', got {readout!r}")
    return arrays if readout == "identity" else {k: v for k, v in arrays.items()
                                                 if k != "choices"}
