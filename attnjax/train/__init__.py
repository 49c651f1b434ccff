"""Training: loop and checkpoints, losses, optimiser, decoding, seq2seq evaluation."""

from attnjax.train.classify import (
    classification_loss_fn,
    fit_classifier,
    map_in_batches,
    predict,
)
from attnjax.train.decoding import beam_search, greedy_decode, tile_beams
from attnjax.train.loop import (
    Checkpointer,
    TrainState,
    epoch_batch_indices,
    fit,
    make_batch_fn,
    make_train_step,
)
from attnjax.train.losses import cross_entropy, sequence_exact_match, token_accuracy
from attnjax.train.optim import learning_rate_schedule, make_optimizer
from attnjax.train.seq2seq import (
    decode,
    evaluate_seq2seq,
    seq2seq_loss_fn,
    transformer_decoding,
)

__all__ = [
    "Checkpointer",
    "TrainState",
    "beam_search",
    "classification_loss_fn",
    "cross_entropy",
    "decode",
    "epoch_batch_indices",
    "evaluate_seq2seq",
    "fit",
    "fit_classifier",
    "greedy_decode",
    "learning_rate_schedule",
    "make_batch_fn",
    "make_optimizer",
    "make_train_step",
    "map_in_batches",
    "predict",
    "seq2seq_loss_fn",
    "sequence_exact_match",
    "tile_beams",
    "token_accuracy",
    "transformer_decoding",
]
