"""Step 3: coreference/agreement/recall data, the position classifier, the antecedent probe,
input-gradient norms, terminal bars, and the coreference and fading_memory experiments."""


import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnjax import analysis, nn, train, viz
from attnjax.data import PAD_ID, coreference, recall

TASK = coreference.CoreferenceTask(seed=0)


# --------------------------------------------------------------------------- data


def test_same_seed_same_examples_and_different_streams_differ():
    a = TASK.sample(50, "train", filler_tokens=range(20))
    b = coreference.CoreferenceTask(seed=0).sample(50, "train", filler_tokens=range(20))
    c = TASK.sample(50, "train", filler_tokens=range(20), stream=1)
    assert a == b
    assert a != c


def test_recorded_positions_point_at_the_pronoun_and_the_candidates():
    for e in TASK.sample(300, "train", filler_tokens=range(0, 40)):
        assert e.tokens[e.pronoun] in ("it", "he", "she")
        assert e.tokens[e.pronoun - 1] == "because"
        assert e.candidates[0] < e.candidates[1] < e.pronoun
        nouns = set(coreference.OBJECTS + coreference.CONTAINERS + coreference.ANIMALS
                    + coreference.FOODS + coreference.MALE_NAMES + coreference.FEMALE_NAMES)
        assert {e.tokens[c] for c in e.candidates} <= nouns
        assert e.distance == e.pronoun - e.candidates[e.label]


@pytest.mark.parametrize("filler", [0, 1, 2, 3, 7, 30, 61])
def test_filler_tokens_are_exactly_the_requested_number(filler):
    for e in TASK.sample(20, "train", filler_tokens=filler):
        clause_end = e.pronoun - 1 - filler  # the filler ends at "because"
        family = next(f for f in coreference.FAMILIES if f.name == e.family)
        relation = next(r for r in family.relations if r.name == e.relation)
        a, b = (e.tokens[c] for c in e.candidates)
        if relation.templates[e.template].index("{b}") < relation.templates[e.template].index(
            "{a}"
        ):
            a, b = b, a
        clause = relation.templates[e.template].format(a=a, b=b)
        assert list(e.tokens[:clause_end]) == coreference.tokenize(clause)
        between = e.tokens[clause_end : e.pronoun - 1]
        assert e.filler_tokens == filler
        assert filler == 0 or (between[0] == "," and len(between) == filler)
        nouns = set(coreference.OBJECTS + coreference.CONTAINERS + coreference.ANIMALS)
        assert not nouns & set(between)  # fillers never add a candidate


def test_flipping_the_property_flips_the_referent():
    """The Winograd property: the same sentence with the other pole's adjective refers to
    the other candidate (unless the pronoun itself changes, as in the meal family)."""
    flipped = 0
    for e in TASK.sample(400, "train"):
        family = next(f for f in coreference.FAMILIES if f.name == e.family)
        relation = next(r for r in family.relations if r.name == e.relation)
        other = next(p for p in relation.poles if p != e.pole)
        tokens = list(e.tokens)
        tokens[-2] = coreference.POLES[other][0]
        if family.name == "meal":
            continue  # there the pronoun (he/she vs it) changes with the referent
        flipped_example = coreference.parse_seed(" ".join(tokens))
        assert flipped_example.label == 1 - e.label, e.text
        flipped += 1
    assert flipped > 200


def test_the_relation_decides_the_polarity_of_a_shared_property():
    fit = coreference.parse_seed("the ball didn't fit in the box because it was too big .")
    hold = coreference.parse_seed("the box couldn't hold the ball because it was too big .")
    assert fit.tokens[fit.antecedent] == "ball" and hold.tokens[hold.antecedent] == "ball"
    assert fit.label == 0 and hold.label == 1  # same referent, opposite sentence position


def test_seed_sentences_parse_with_the_intended_antecedents():
    trophy, arjun = (coreference.parse_seed(s) for s in coreference.SEED_SENTENCES)
    assert trophy.tokens[trophy.antecedent] == "trophy" and trophy.tokens[trophy.pronoun] == "it"
    assert arjun.tokens[arjun.antecedent] == "arjun" and arjun.tokens[arjun.pronoun] == "he"
    vocab = TASK.vocabulary()
    for example in (trophy, arjun):
        assert PAD_ID not in vocab.encode(example.tokens)
        assert 3 not in vocab.encode(example.tokens)  # no <unk>


def test_test_split_uses_only_held_out_pairs_and_templates_never_seen_in_training():
    train_set = TASK.sample(3000, "train", filler_tokens=range(10))
    test_set = TASK.sample(1000, "test", filler_tokens=range(10))
    pair = lambda e: (e.family, frozenset(e.tokens[c] for c in e.candidates))
    assert not {pair(e) for e in train_set} & {pair(e) for e in test_set}
    assert all(e.template < 3 for e in train_set)
    assert not any(coreference.uses_held_out_template(e) for e in train_set)
    held_out = [coreference.uses_held_out_template(e) for e in test_set]
    assert held_out == [e.template == 3 for e in test_set]  # every relation has 4 templates
    assert 0.4 < np.mean(held_out) < 0.6
    # The seed sentences' pairs are held out: the model never trains on them.
    assert ("trophy", "suitcase") in TASK.pairs("containment", "test")
    assert ("arjun", "pizza") in TASK.pairs("meal", "test")
    # Every test token is in the vocabulary (held-out templates included).
    vocab = TASK.vocabulary()
    assert all(3 not in vocab.encode(e.tokens) for e in test_set)


def test_labels_are_balanced_so_position_heuristics_score_about_half():
    labels = [e.label for e in TASK.sample(4000, "train", filler_tokens=range(61))]
    assert 0.45 < np.mean(labels) < 0.55


def test_sample_refuses_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        TASK.sample(3, "dev")
    with pytest.raises(ValueError, match="filler_tokens"):
        TASK.sample(3, filler_tokens=-1)
    with pytest.raises(ValueError, match="length"):
        coreference.encode(TASK.sample(3, filler_tokens=5), TASK.vocabulary(), length=4)


def test_encode_pads_right_and_records_positions():
    examples = TASK.sample(5, "train", filler_tokens=[0, 9])
    arrays = coreference.encode(examples, TASK.vocabulary(), length=80)
    assert arrays["tokens"].shape == (5, 80)
    for i, e in enumerate(examples):
        assert (arrays["tokens"][i, len(e.tokens) :] == PAD_ID).all()
        assert arrays["last"][i] == len(e.tokens) - 1
        assert arrays["pronoun"][i] == e.pronoun
        assert list(arrays["choices"][i]) == TASK.vocabulary().encode(
            [e.tokens[c] for c in e.candidates]
        )


def test_agreement_attractors_have_the_other_number():
    task = coreference.AgreementTask(seed=0)
    plural_words = set(coreference.PLURAL_NOUNS + coreference.PLURAL_PLACES)
    for e in task.sample(200, num_attractors=[0, 1, 2, 3, 4]):
        assert (e.tokens[e.subject] in plural_words) == e.plural
        for a in e.attractors:
            assert (e.tokens[a] in plural_words) != e.plural
        assert e.tokens[-1] == "suddenly"
    assert all(3 not in task.vocabulary().encode(e.tokens) for e in task.sample(50))


def test_recall_puts_the_key_first_and_the_query_last():
    batch = recall.recall_batch(0, 64, 20, num_keys=5, num_noise=7)
    first_key = recall.QUERY_ID + 1
    assert (batch["tokens"][:, 0] == first_key + batch["label"]).all()
    assert (batch["tokens"][:, -1] == recall.QUERY_ID).all()
    noise = batch["tokens"][:, 1:-1]
    assert ((noise >= first_key + 5) & (noise < recall.vocab_size(5, 7))).all()
    assert (batch["last"] == 19).all()
    with pytest.raises(ValueError, match="length"):
        recall.recall_batch(0, 2, 1)


# --------------------------------------------------------------------------- models


def tiny_transformer_classifier(vocab_size=30, classes=3, dtype=jnp.float32):
    config = nn.TransformerConfig(vocab_size=vocab_size, model_dim=16, num_heads=2, num_layers=2,
                                  mlp_dim=32, dropout_rate=0.0, max_len=64, dtype=dtype)
    return nn.PositionClassifier(nn.Encoder(config), classes)


def tiny_rnn_classifier(cell="gru", vocab_size=30, classes=3):
    config = nn.RNNConfig(vocab_size=vocab_size, embed_dim=8, hidden_dim=12, cell=cell,
                          dropout_rate=0.0)
    return nn.PositionClassifier(nn.RecurrentStates(config), classes)


def test_position_classifier_reads_the_requested_position_and_checks_it():
    model = tiny_transformer_classifier()
    tokens = jnp.asarray(np.random.default_rng(0).integers(4, 30, (3, 9)), jnp.int32)
    variables = model.init(jax.random.key(0), tokens, jnp.zeros(3, jnp.int32))
    at = lambda p: model.apply({"params": variables["params"]}, tokens, jnp.asarray(p, jnp.int32))
    assert at([0, 1, 2]).shape == (3, 3)
    np.testing.assert_allclose(at([0, 1, 2])[1], at([5, 1, 7])[1], atol=1e-6)
    assert not np.allclose(at([0, 1, 2])[1], at([0, 2, 2])[1])
    with pytest.raises(ValueError, match=r"`position` must be int \[B=3\]"):
        at([[0], [1], [2]])


def test_choices_restrict_the_logits_to_the_given_classes():
    model = tiny_transformer_classifier(classes=30)
    tokens = jnp.asarray(np.random.default_rng(3).integers(4, 30, (2, 6)), jnp.int32)
    position = jnp.array([5, 2], jnp.int32)
    params = model.init(jax.random.key(0), tokens, position)["params"]
    full = model.apply({"params": params}, tokens, position)
    choices = tokens[:, :2]  # e.g. the candidates' token ids
    picked = model.apply({"params": params}, tokens, position, choices)
    np.testing.assert_array_equal(picked, np.take_along_axis(np.asarray(full), choices, 1))
    with pytest.raises(ValueError, match=r"`choices` must be \[B=2, K\]"):
        model.apply({"params": params}, tokens, position, choices[0])


@pytest.mark.parametrize("cell", ["simple", "lstm"])
def test_rnn_gradient_never_reaches_tokens_after_the_readout(cell):
    model = tiny_rnn_classifier(cell)
    tokens = jnp.asarray(np.random.default_rng(1).integers(4, 30, (2, 10)), jnp.int32)
    position = jnp.array([4, 9], jnp.int32)
    variables = model.init(jax.random.key(0), tokens, position)
    norms = np.asarray(analysis.input_gradient_norms(model, variables, tokens, position,
                                                     jnp.array([0, 2])))
    assert norms.shape == (2, 10)
    assert (norms[0, 5:] == 0).all() and (norms[0, :5] > 0).all()
    assert (norms[1] > 0).all()


def test_input_gradient_norm_is_the_directional_derivative():
    """|g_p| equals the finite-difference slope of the loss along g_p / |g_p| (float64)."""
    with jax.enable_x64(True):
        model = tiny_transformer_classifier(dtype=jnp.float64)
        tokens = jnp.asarray(np.random.default_rng(2).integers(4, 30, (1, 7)), jnp.int32)
        position, label = jnp.array([6], jnp.int32), jnp.array([1])
        variables = jax.tree.map(lambda x: x.astype(jnp.float64),
                                 model.init(jax.random.key(0), tokens, position))
        norms = analysis.input_gradient_norms(model, variables, tokens, position, label)

        def loss(perturbation):
            logits = model.apply({"params": variables["params"],
                                  "perturbations": {"encoder": {"embeddings": perturbation}}},
                                 tokens, position)
            return -jax.nn.log_softmax(logits)[0, 1]

        zero = jnp.zeros((1, 7, 16), jnp.float64)
        gradient = jax.grad(loss)(zero)
        for p in (0, 3, 6):
            direction = zero.at[0, p].set(gradient[0, p] / jnp.linalg.norm(gradient[0, p]))
            eps = 1e-6
            slope = (loss(eps * direction) - loss(-eps * direction)) / (2 * eps)
            np.testing.assert_allclose(norms[0, p], slope, rtol=1e-6)


def test_input_gradient_norms_needs_the_perturbation_hook():
    class NoHook(flax_nn.Module):
        @flax_nn.compact
        def __call__(self, tokens, position):
            return flax_nn.Dense(2)(flax_nn.Embed(30, 4)(tokens).sum(1))

    model = NoHook()
    tokens = jnp.ones((1, 4), jnp.int32)
    params = model.init(jax.random.key(0), tokens, jnp.zeros(1, jnp.int32))["params"]
    with pytest.raises(ValueError, match="perturb"):
        analysis.input_gradient_norms(model, {"params": params}, tokens, jnp.zeros(1, jnp.int32),
                                      jnp.zeros(1, jnp.int32))


def test_init_variables_apply_to_inputs_of_any_shape():
    """The gradient hook creates nothing at init: variables from init work on other shapes."""
    model = tiny_rnn_classifier()
    variables = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                           jnp.zeros(1, jnp.int32))
    assert set(variables) == {"params"}
    logits = model.apply(variables, jnp.ones((3, 9), jnp.int32), jnp.zeros(3, jnp.int32))
    assert logits.shape == (3, 3)


def test_classifier_training_is_deterministic_and_learns_recall(tmp_path):
    data = recall.recall_batch(0, 512, 8, num_keys=4, num_noise=6)
    model = tiny_transformer_classifier(vocab_size=recall.vocab_size(4, 6), classes=4)
    kwargs = dict(position_key="last", num_steps=150, batch_size=32, learning_rate=3e-3, seed=0,
                  warmup_steps=10, log_every=50)
    params, info = train.fit_classifier(model, data, **kwargs)
    again, _ = train.fit_classifier(model, data, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, params, again)
    test = recall.recall_batch(1, 256, 8, num_keys=4, num_noise=6)
    accuracy = np.mean(train.predict(model, params, test, "last").argmax(-1) == test["label"])
    assert accuracy > 0.9, accuracy
    assert info["num_params"] == sum(x.size for x in jax.tree.leaves(params))


# --------------------------------------------------------------------------- probe and bars


def test_antecedent_probe_counts_heads_that_prefer_the_gold_candidate():
    # 2 layers, 3 examples, 2 heads, T = S = 5; pronoun at 4, candidates at 0 and 2.
    weights = np.zeros((2, 3, 2, 5, 5))
    weights[0, :, 0, 4, 0] = 0.6  # layer 0 head 0 always looks at candidate 0
    weights[0, :, 0, 4, 2] = 0.1
    weights[1, :, 1, 4, 2] = 0.3  # layer 1 head 1 always looks at candidate 1
    label = np.array([0, 0, 1])
    accuracy = analysis.antecedent_probe(weights, np.full(3, 4), np.tile([0, 2], (3, 1)), label)
    np.testing.assert_allclose(accuracy, [[2 / 3, 0.5], [0.5, 1 / 3]])
    with pytest.raises(ValueError, match=r"candidates \[3, 2\]"):
        analysis.antecedent_probe(weights, np.full(3, 4), np.zeros((3, 3), int), label)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_bars_have_fixed_width_and_fill_in_proportion(weights):
    tokens = [f"w{i}" for i in range(len(weights))]
    lines = viz.attention_bars(tokens, np.array(weights), width=10).splitlines()
    assert len(lines) == len(weights)
    for line, w in zip(lines, weights, strict=True):
        bar = line.split()[1]
        assert len(bar) == 10 and bar.count("█") == int(round(w * 10))


def test_bars_render_the_seed_example_and_check_shapes():
    text = viz.attention_bars(["the", "trophy", "it"], np.array([0.2, 0.71, 0.09]),
                              query="it ->", highlight=[1])
    assert text.splitlines()[0] == "it ->"
    assert "trophy ███████░░░ 0.71  <" in text
    with pytest.raises(ValueError, match=r"\[S=3\]"):
        viz.attention_bars(["a", "b", "c"], np.ones(2))


# --------------------------------------------------------------------------- trainer


def test_fit_classifier_stops_at_the_first_interval_reaching_the_accuracy():
    data = recall.recall_batch(0, 256, 6, num_keys=2, num_noise=3)
    model = tiny_transformer_classifier(vocab_size=recall.vocab_size(2, 3), classes=2)
    _, info = train.fit_classifier(model, data, position_key="last", num_steps=400,
                                   batch_size=32, learning_rate=3e-3, seed=0, warmup_steps=5,
                                   log_every=20, stop_at_accuracy=1.0)
    assert info["steps"] < 400 and info["steps"] % 20 == 0
    assert info["final_train_accuracy"] == 1.0
