"""Translation tasks from an experiment config: the toy English -> French-like task (with
gold word alignments) or SCAN (Lake & Baroni 2018), split three ways and encoded for
seq2seq training.

Splits: train (fit), dev (choose: learning rate, best head), test (report only). The toy
data set is drawn per seed (``SeedRngs(seed).int("data_draw")``), then test and dev
sentences are held out of it. SCAN's test half is the official one; dev is a random
``config.scan.dev_fraction`` of the official train half, drawn with the seed.

Vocabularies are built from the *train* split only; a dev or test word never seen in
training is encoded as ``<unk>`` (``Vocab.encode``), so nothing about the held-out splits
leaks into the model's inputs.
"""

from __future__ import annotations

import numpy as np

from attnjax.data import scan
from attnjax.data.toy_translation import ToyTranslation, train_test_split
from attnjax.data.vocab import Vocab, encode_pairs


def _seed_of(config, seed: int | None) -> int:
    if seed is not None:
        return int(seed)
    if "seeds" in config:
        return int(config.seeds[0])
    return int(config.get("seed", 0))


def _draw_seed(seed: int) -> int:
    from attnjax.train.trainer import SeedRngs  # train sits above data

    return SeedRngs(seed).int("data_draw")


def _toy_splits(config, draw: int):
    t = config.toy
    sampler = ToyTranslation(
        draw,
        max_adjectives=t.max_adjectives,
        relative_clause_prob=t.relative_clause_prob,
        plural_prob=t.plural_prob,
        negation_prob=t.negation_prob,
    )
    unique = list({e.source: e for e in sampler.sample(t.num_sentences)}.values())
    rest, test = train_test_split(unique, t.test_fraction, seed=draw)
    # dev_fraction is of the whole set, like test_fraction.
    train, dev = train_test_split(rest, t.dev_fraction / (1.0 - t.test_fraction), seed=draw + 1)
    pairs = lambda examples: [(e.source, e.target) for e in examples]
    golds = lambda examples: [e.alignment for e in examples]
    return pairs(train), pairs(dev), pairs(test), golds(dev), golds(test)


def _scan_splits(config, draw: int):
    official = scan.load_split(config.scan_split, "train")
    test = scan.load_split(config.scan_split, "test")
    order = np.random.default_rng(draw).permutation(len(official))
    held_out = set(order[: round(config.scan.dev_fraction * len(official))].tolist())
    train = [p for i, p in enumerate(official) if i not in held_out]
    dev = [p for i, p in enumerate(official) if i in held_out]
    return train, dev, test, None, None


def load_task(config, seed: int | None = None) -> dict:
    """The task of one seed, split three ways.

    Args:
      config: an experiment config with ``task`` (``"toy"`` or ``"scan"``), ``toy``
        (``num_sentences``, ``test_fraction``, ``dev_fraction``, grammar probabilities),
        ``scan_split`` and ``scan.dev_fraction``, and ``eval.max_examples`` /
        ``eval.max_dev_examples`` (0 = all).
      seed: the seed whose data draw to use (default: ``config.seeds[0]``, or
        ``config.seed``).

    Returns:
      ``train``/``dev``/``test``: encoded arrays (``source``, ``target_in``,
      ``target_out``); ``dev_pairs``/``test_pairs`` (token tuples); ``dev_golds``/``golds``
      (gold links of dev/test, None for SCAN); ``train_pairs``; ``source_vocab``,
      ``target_vocab`` (train words only); ``num_train``/``num_dev``/``num_test``;
      ``num_unknown_test_words`` (test tokens encoded as ``<unk>``).
    """
    draw = _draw_seed(_seed_of(config, seed))
    if config.task == "scan":
        train, dev, test, dev_golds, golds = _scan_splits(config, draw)
    elif config.task == "toy":
        train, dev, test, dev_golds, golds = _toy_splits(config, draw)
    else:
        raise ValueError(f"config.task must be 'toy' or 'scan', got {config.task!r}")
    for name, pairs in (("train", train), ("dev", dev), ("test", test)):
        if not pairs:
            raise ValueError(f"load_task: the {name} split is empty; use more sentences")
    max_test = int(config.eval.get("max_examples", 0) or 0)
    max_dev = int(config.eval.get("max_dev_examples", 0) or 0)
    if max_test:
        test, golds = test[:max_test], golds[:max_test] if golds else None
    if max_dev:
        dev, dev_golds = dev[:max_dev], dev_golds[:max_dev] if dev_golds else None
    source_vocab = Vocab.build([s for s, _ in train])
    target_vocab = Vocab.build([t for _, t in train])
    # Array widths only (not ids) look at every split, so that every test pair fits.
    everything = train + dev + test
    longest_source = max(len(s) for s, _ in everything) + 1
    longest_target = max(len(t) for _, t in everything) + 1
    encode = lambda pairs: encode_pairs(
        pairs, source_vocab, target_vocab, longest_source, longest_target
    )
    unknown = sum(w not in source_vocab for s, _ in test for w in s) + sum(
        w not in target_vocab for _, t in test for w in t)
    return {
        "train": encode(train),
        "dev": encode(dev),
        "test": encode(test),
        "train_pairs": train,
        "dev_pairs": dev,
        "test_pairs": test,
        "dev_golds": dev_golds,
        "golds": golds,
        "source_vocab": source_vocab,
        "target_vocab": target_vocab,
        "num_train": len(train),
        "num_dev": len(dev),
        "num_test": len(test),
        "num_unknown_test_words": int(unknown),
    }
