"""Recurrent seq2seq baselines: shapes, padding, additive attention, step decoding, training.

Most tests fill parameters of the shapes ``init`` would create (``jax.eval_shape``) with
seeded random numbers: the behaviours checked here hold for any parameters, and skipping
``init`` saves a compilation per configuration.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnjax import analysis, train
from attnjax.data import BOS_ID, EOS_ID
from attnjax.nn.recurrent import RNNConfig, RNNSeq2Seq

SOURCE_VOCAB, TARGET_VOCAB = 11, 13
B, S, T = 4, 6, 5


def make_model(cell="gru", attention=None, bidirectional=False, **changes) -> RNNSeq2Seq:
    config = RNNConfig(
        vocab_size=SOURCE_VOCAB, target_vocab_size=TARGET_VOCAB, embed_dim=8, hidden_dim=12,
        cell=cell, attention=attention, bidirectional_encoder=bidirectional, dropout_rate=0.0,
    )
    return RNNSeq2Seq(config.replace(**changes))


def right_padded(rng, lengths, width, vocab=SOURCE_VOCAB) -> np.ndarray:
    """``[len(lengths), width]`` ids in ``[3, vocab)``, row i real for its first lengths[i]."""
    tokens = rng.integers(3, vocab, (len(lengths), width)).astype(np.int32)
    return np.where(np.arange(width) < np.asarray(lengths)[:, None], tokens, 0)


def random_params(model: RNNSeq2Seq, seed: int = 0):
    """Parameters of ``init``'s shapes, N(0, 0.5^2): no compilation needed."""
    dummy = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), dummy, dummy)["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype) for s in leaves]
    )


def sources_and_targets(seed=0, lengths=(S, 3, 1, 5)):
    rng = np.random.default_rng(seed)
    source = right_padded(rng, lengths, S)
    target_in = rng.integers(3, TARGET_VOCAB, (B, T)).astype(np.int32)
    target_in[:, 0] = 1
    return jnp.asarray(source), jnp.asarray(target_in)


ALL_COMBINATIONS = list(itertools.product(["gru", "lstm", "simple"], [None, "additive"],
                                          [False, True]))


@pytest.mark.parametrize("cell,attention,bidirectional", ALL_COMBINATIONS)
def test_logits_and_sown_attention_weights_have_transformer_shapes(cell, attention,
                                                                   bidirectional):
    # eval_shape traces without compiling, so every combination is cheap.
    model = make_model(cell, attention, bidirectional, num_layers=2)
    source, target_in = sources_and_targets()
    variables = {"params": random_params(model)}
    logits, state = jax.eval_shape(
        lambda v, s, t: model.apply(v, s, t, mutable=["intermediates"]),
        variables, source, target_in,
    )
    assert logits.shape == (B, T, TARGET_VOCAB) and logits.dtype == jnp.float32
    if attention is None:  # the decoder sees the source only through its initial state
        assert not jax.tree.leaves(state)
    else:
        (weights,) = state["intermediates"]["decoder"]["step"]["cross_attention"][
            "attention_weights"
        ]
        assert weights.shape == (B, 1, T, S)


@pytest.mark.parametrize("cell,attention,bidirectional", ALL_COMBINATIONS)
def test_every_decoding_state_leaf_has_the_batch_leading(cell, attention, bidirectional):
    model = make_model(cell, attention, bidirectional, num_layers=2)
    source, _ = sources_and_targets()
    params = random_params(model)
    state = jax.eval_shape(lambda p, s: model.decoding(p, s, 7)[1], params, source)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == (2 if cell == "lstm" else 1) * 2 + (3 if attention else 0)
    assert all(leaf.shape[0] == B for leaf in leaves)
    assert ("memory" in state) == (attention is not None)


# Sparse: every cell with and without attention; directions and depths alternate.
STEP_COMBINATIONS = [
    ("gru", None, False, 1),
    ("gru", "additive", True, 2),
    ("lstm", None, True, 2),
    ("lstm", "additive", False, 1),
    ("simple", None, False, 2),
    ("simple", "additive", True, 1),
]


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", STEP_COMBINATIONS)
def test_step_decoding_gives_the_teacher_forced_logits(cell, attention, bidirectional,
                                                       num_layers):
    model = make_model(cell, attention, bidirectional, num_layers=num_layers)
    params = random_params(model)
    source, target_in = sources_and_targets()

    @jax.jit
    def both(params, source, target_in):
        teacher_forced = model.apply({"params": params}, source, target_in)
        step_fn, state = model.decoding(params, source, target_in.shape[1])

        def body(state, tokens):
            logits, state = step_fn(state, tokens[:, None])
            return state, logits

        _, stepped = jax.lax.scan(body, state, target_in.T)
        return teacher_forced, jnp.swapaxes(stepped, 0, 1)

    teacher_forced, stepped = both(params, source, target_in)
    np.testing.assert_allclose(stepped, teacher_forced, rtol=1e-5, atol=1e-5)


@functools.cache
def _padding_case():
    model = make_model("lstm", "additive", bidirectional=True, num_layers=2)
    return model, random_params(model, seed=1), jax.jit(model.apply)


@given(
    lengths=st.lists(st.integers(0, S), min_size=B, max_size=B),
    extra=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_extra_source_padding_does_not_change_logits(lengths, extra, seed):
    # A bidirectional 2-layer LSTM with attention: the backward direction, the final-state
    # selection, the bridge and the attention mask all have to ignore the padding.
    model, params, forward = _padding_case()
    rng = np.random.default_rng(seed)
    source = right_padded(rng, lengths, S)
    target_in = rng.integers(1, TARGET_VOCAB, (B, T)).astype(np.int32)
    padded = np.pad(source, ((0, 0), (0, extra)))
    np.testing.assert_allclose(
        forward({"params": params}, padded, target_in),
        forward({"params": params}, source, target_in),
        rtol=1e-5, atol=1e-5,
    )


def test_decoder_initial_state_is_the_encoder_state_at_the_last_real_token():
    # Unidirectional, no attention: the initial carry is the forward state after the last
    # real token, i.e. the carry of encoding the unpadded row alone.
    model = make_model("gru", None, bidirectional=False)
    params = random_params(model, seed=2)
    source, _ = sources_and_targets(lengths=(S, 3, 1, 5))
    encode = jax.jit(
        lambda s: model.apply({"params": params}, s, method=RNNSeq2Seq.encode)["carry"][0]
    )
    batched = encode(source)
    for row, length in enumerate((S, 3, 1, 5)):
        alone = encode(source[row : row + 1, :length])
        np.testing.assert_allclose(batched[row], alone[0], rtol=1e-5, atol=1e-6)


def test_attention_weights_sum_to_one_over_real_source_and_are_zero_on_padding():
    model = make_model("gru", "additive", bidirectional=True)
    params = random_params(model, seed=3)
    lengths = (S, 3, 1, 0)  # the last row is all padding: its weights are all zero
    source, target_in = sources_and_targets(lengths=lengths)
    capture = jax.jit(lambda p, s, t: analysis.capture_attention(model, {"params": p}, s, t))
    logits, maps = capture(params, source, target_in)
    assert list(maps) == ["decoder/step/cross_attention"]
    weights = np.asarray(analysis.stack_layers(maps, "cross_attention")[0])  # [B, 1, T, S]
    assert weights.shape == (B, 1, T, S)
    valid = np.arange(S) < np.asarray(lengths)[:, None]  # [B, S]
    np.testing.assert_array_equal(weights[np.broadcast_to(~valid[:, None, None, :], weights.shape)],
                                  0.0)
    np.testing.assert_allclose(weights.sum(-1)[:3], 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[3], 0.0)
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"cell": "transformer"}, "cell"),
        ({"attention": "dot"}, "attention"),
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_dim": -4}, "hidden_dim"),
        ({"embed_dim": 2.5}, "embed_dim"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"target_vocab_size": 0}, "target_vocab_size"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"bidirectional_encoder": "yes"}, "bidirectional_encoder"),
        ({"pad_id": 99}, "pad_id"),
        ({"attention_dim": 0}, "attention_dim"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"RNNConfig: `{field}`"):
        RNNConfig(**{"vocab_size": 10, **changes})


def test_bad_source_shape_is_reported_with_the_argument_name():
    model = make_model()
    with pytest.raises(ValueError, match="`source` must be integer token ids of shape"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 3, 1), jnp.int32),
                       jnp.zeros((2, 3), jnp.int32))


# --- training ------------------------------------------------------------------------------

def reversal_task(num_examples, seed, *, exclude=(), min_length=3, max_length=6, vocab=12):
    """Reverse a random sequence of 3..6 symbols; sources right-padded to a fixed width."""
    rng = np.random.default_rng(seed)
    width = max_length + 1
    seen = {tuple(row) for row in exclude}
    source, target_in, target_out = (np.zeros((num_examples, width), np.int32)
                                     for _ in range(3))
    i = 0
    while i < num_examples:
        length = int(rng.integers(min_length, max_length + 1))
        body = rng.integers(3, vocab, length)
        row = np.zeros(width, np.int32)
        row[:length], row[length] = body, EOS_ID
        if tuple(row) in seen:  # held-out data never seen in training
            continue
        seen.add(tuple(row))
        source[i] = row
        target_in[i, 0], target_in[i, 1 : length + 1] = BOS_ID, body[::-1]
        target_out[i, :length], target_out[i, length] = body[::-1], EOS_ID
        i += 1
    return {"source": source, "target_in": target_in, "target_out": target_out}


@pytest.fixture(scope="module")
def trained_reverser():
    arrays = reversal_task(1024, seed=0)
    held_out = reversal_task(128, seed=1, exclude=arrays["source"])
    model = RNNSeq2Seq(RNNConfig(vocab_size=12, embed_dim=16, hidden_dim=32, cell="gru",
                                 attention="additive", dropout_rate=0.0))
    params = jax.jit(model.init)(
        jax.random.key(0), arrays["source"][:1], arrays["target_in"][:1]
    )["params"]
    num_steps = 200
    optimizer = train.make_optimizer(1e-2, warmup_steps=20, total_steps=num_steps)
    state = train.TrainState.create(params, optimizer)
    step = train.make_train_step(train.seq2seq_loss_fn(model), optimizer)
    batch_at = lambda s: {k: v[train.epoch_batch_indices(1024, 64, s, seed=0)]
                          for k, v in arrays.items()}
    state, records = train.fit(state, step, batch_at, num_steps=num_steps,
                               base_key=jax.random.key(1), progress=False, log_every=100)
    return model, state.params, held_out, records


def test_gru_with_additive_attention_learns_to_reverse_held_out_sequences(trained_reverser):
    model, params, held_out, records = trained_reverser
    assert records[-1]["loss"] < 0.1 * records[0]["loss"]
    metrics, predictions = train.evaluate_seq2seq(model, params, held_out, batch_size=64)
    # Chance is at most 9**-3 per sequence (9 symbols, at least 3 of them).
    assert metrics["exact_match"] >= 0.9, metrics
    assert predictions.shape == held_out["target_out"].shape


def test_greedy_and_beam_decoding_of_an_rnn(trained_reverser):
    model, params, held_out, _ = trained_reverser
    source, targets = jnp.asarray(held_out["source"][:16]), held_out["target_out"][:16]
    width = targets.shape[1]
    greedy = np.asarray(train.decode(model, params, source, max_len=width))
    beam = np.asarray(train.decode(model, params, source, max_len=width, beam_size=3))
    assert greedy.shape == beam.shape == (16, width)
    assert np.mean(np.all(beam == targets, axis=1)) >= 0.9
    # Greedy tokens are the argmax of a teacher-forced pass over greedy's own prefix (the
    # decoder is causal, so padding the prefix to full width changes nothing before it).
    prefix = np.concatenate([np.ones((16, 1), np.int32), greedy[:, :-1]], axis=1)
    logits = jax.jit(model.apply)({"params": params}, source, jnp.asarray(prefix))
    expected = np.asarray(jnp.argmax(logits, -1))
    after_eos = np.cumsum(greedy == EOS_ID, axis=1) - (greedy == EOS_ID) > 0
    np.testing.assert_array_equal(greedy[~after_eos], expected[~after_eos])
