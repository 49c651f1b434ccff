"""Training: the trainer (``train``: seeds vmapped, resumable), loop and checkpoints,
losses, optimiser, decoding, sampling from a decoder-only LM, seq2seq evaluation."""

from attnjax.train.classify import (
    classification_loss_fn,
    fit_classifier,
    map_in_batches,
    predict,
    train_classifier,
)
from attnjax.train.decoding import beam_search, greedy_decode, tile_beams
from attnjax.train.loop import (
    Checkpointer,
    Interrupted,
    TrainState,
    epoch_batch_indices,
    fit,
    make_batch_fn,
    make_train_step,
)
from attnjax.train.losses import cross_entropy, sequence_exact_match, token_accuracy
from attnjax.train.optim import learning_rate_schedule, make_optimizer
from attnjax.train.sampling import generate, prefill, sample_logits
from attnjax.train.seq2seq import (
    decode,
    evaluate_seq2seq,
    seq2seq_loss_fn,
    train_seq2seq,
    transformer_decoding,
)
from attnjax.train.trainer import (
    Member,
    SeedRngs,
    TrainResult,
    check_train_config,
    num_params,
    optimizer_from_config,
    stack_batches,
    train,
)

__all__ = [
    "Checkpointer",
    "Interrupted",
    "Member",
    "SeedRngs",
    "TrainResult",
    "check_train_config",
    "num_params",
    "optimizer_from_config",
    "stack_batches",
    "train",
    "train_classifier",
    "train_seq2seq",
    "TrainState",
    "beam_search",
    "classification_loss_fn",
    "cross_entropy",
    "decode",
    "epoch_batch_indices",
    "evaluate_seq2seq",
    "fit",
    "fit_classifier",
    "generate",
    "greedy_decode",
    "learning_rate_schedule",
    "make_batch_fn",
    "make_optimizer",
    "make_train_step",
    "map_in_batches",
    "predict",
    "prefill",
    "sample_logits",
    "seq2seq_loss_fn",
    "sequence_exact_match",
    "tile_beams",
    "token_accuracy",
    "transformer_decoding",
]
