"""Tasks, vocabularies and batching, in pure Python + NumPy (no JAX needed).

* ``vocab``: ``Vocab`` (``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3) and
  ``encode_pairs`` -> padded int32 ``source``/``target_in``/``target_out``.
* ``batching``: ``batches`` (fixed shapes) and ``bucket_by_length`` (less padding).
* ``scan``: SCAN (Lake & Baroni 2018) loader, grammar, generator and rule-based splits.
* ``toy_translation``: English -> French-like pairs with gold word alignments.
* ``coreference``: Winograd-style pronoun resolution and subject-verb agreement with
  controllable distance; ``recall``: a key at the start, reproduced at the end.
* ``conllu``: Universal Dependencies treebanks (UD English EWT in ``../shared/data``);
  ``wsc``: the Winograd Schema Challenge collection.
"""

from attnjax.data import conllu, coreference, recall, scan, toy_translation
from attnjax.data.batching import batches, bucket_by_length, row_lengths, trim_padding
from attnjax.data.toy_translation import (
    Example,
    ToyTranslation,
    gold_alignment_matrix,
    train_test_split,
)
from attnjax.data.vocab import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    Vocab,
    encode_pairs,
)

__all__ = [
    "BOS",
    "BOS_ID",
    "EOS",
    "EOS_ID",
    "PAD",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK",
    "UNK_ID",
    "Example",
    "ToyTranslation",
    "Vocab",
    "batches",
    "bucket_by_length",
    "conllu",
    "coreference",
    "encode_pairs",
    "gold_alignment_matrix",
    "row_lengths",
    "recall",
    "scan",
    "toy_translation",
    "train_test_split",
    "trim_padding",
]
