"""Translation tasks from an experiment config: the toy English -> French-like task (with
gold word alignments) or SCAN (Lake & Baroni 2018), encoded for seq2seq training."""

from __future__ import annotations

from attnjax.data import scan
from attnjax.data.toy_translation import ToyTranslation, train_test_split
from attnjax.data.vocab import Vocab, encode_pairs


def load_task(config) -> dict:
    """Train/test pairs, vocabularies and (toy only) the gold alignments of the test set."""
    if config.task == "scan":
        train_pairs = scan.load_split(config.scan_split, "train")
        test_pairs = scan.load_split(config.scan_split, "test")
        golds = None
    elif config.task == "toy":
        t = config.toy
        sampler = ToyTranslation(
            config.seed,
            max_adjectives=t.max_adjectives,
            relative_clause_prob=t.relative_clause_prob,
            plural_prob=t.plural_prob,
            negation_prob=t.negation_prob,
        )
        unique = list({e.source: e for e in sampler.sample(t.num_sentences)}.values())
        train_examples, test_examples = train_test_split(unique, t.test_fraction, seed=config.seed)
        train_pairs = [(e.source, e.target) for e in train_examples]
        test_pairs = [(e.source, e.target) for e in test_examples]
        golds = [e.alignment for e in test_examples]
    else:
        raise ValueError(f"config.task must be 'toy' or 'scan', got {config.task!r}")
    if config.eval.max_examples:
        test_pairs = test_pairs[: config.eval.max_examples]
        golds = golds[: config.eval.max_examples] if golds else None
    source_vocab = Vocab.build([s for s, _ in train_pairs + test_pairs])
    target_vocab = Vocab.build([t for _, t in train_pairs + test_pairs])
    longest_source = max(len(s) for s, _ in train_pairs + test_pairs) + 1
    longest_target = max(len(t) for _, t in train_pairs + test_pairs) + 1
    encode = lambda pairs: encode_pairs(
        pairs, source_vocab, target_vocab, longest_source, longest_target
    )
    return {
        "train": encode(train_pairs),
        "test": encode(test_pairs),
        "test_pairs": test_pairs,
        "golds": golds,
        "source_vocab": source_vocab,
        "target_vocab": target_vocab,
        "num_train": len(train_pairs),
        "num_test": len(test_pairs),
    }
