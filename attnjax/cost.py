"""What attention costs: query-key pairs, FLOPs and memory, naive vs chunked, by arithmetic.

Checks two sentences of the seed texts without running a model:

* "doubling the number of tokens roughly quadruples the computation", and
* "128,000 tokens = 16 billion attention calculations per layer".

An *attention calculation* is one query-key dot product, i.e. one score. Command line::

    attnjax cost --seq-len 128000 --heads 96 --layers 96 --head-dim 128
    python -m attnjax.cost --seq-len 128000 --heads 96 --layers 96 --head-dim 128 --json

Shapes as in ``attnjax.ops``: B batch, T query length, S key length, H query heads, Hk
key/value heads (Hk divides H), D query/key head dim, Dv value head dim, L layers.

Three levels, every figure an exact integer:

* **per head**: one head of one sequence in one layer (B = H = Hk = 1);
* **per layer**: all H heads of all B sequences of one attention call;
* **per model**: L layers.

Query-key pairs: T*S per head; with ``causal`` (top-left aligned, as
``attnjax.ops.causal_mask``: query i sees keys j <= i) sum_i min(i + 1, S), which is
T*(T+1)/2 when T == S.

FLOPs (a multiply-add is 2 flops):

* forward, per pair: 2*D for ``Q K^T``, 2*Dv for ``P V`` and ``SOFTMAX_FLOPS`` (5: scale,
  max, subtract, exp, sum; the final division is counted with them and ``exp`` as one flop).
  The **naive** implementation computes all T*S scores even when causal (the mask is applied
  after the matmul); the **chunked** one skips masked pairs (FlashAttention skips whole blocks
  above the diagonal; the partly masked diagonal blocks are ignored here).
* backward (``backward=True`` adds it to the forward): naive runs 4 matmuls (dV = P^T dO,
  dP = dO V^T, dQ = dS K, dK = dS^T Q), twice the forward's 2; chunked also recomputes
  ``Q K^T`` (Dao et al. 2022, sec. 3.1), 5 matmuls, 2.5x. The softmax backward
  (dS = P * (dP - rowsum(dO * O)), then the scale) is ``SOFTMAX_BACKWARD_FLOPS`` (3) per score;
  chunked also recomputes the forward softmax (another ``SOFTMAX_FLOPS``).
* projections and MLP (``d_model`` or ``include_projections``), per layer:
  Q and O ``2*T*d_model*H*D`` and ``2*T*H*Dv*d_model``, K and V ``2*S*d_model*Hk*(D + Dv)``,
  the MLP ``2 * 2*T*d_model*(mlp_ratio*d_model)``; for H*D = Hk*D = Dv*H = d_model that is
  ``4*T*d_model^2*2 + 2*T*d_model*4*d_model*2 = 24*T*d_model^2``. Backward is twice the
  forward (gradients for inputs and for weights). Attention FLOPs grow with T*S, these only
  with T, so past ``crossover_seq_len`` attention dominates the layer.

Memory: the activations of the attention call, not weights or optimizer state. Inputs and
output ``q, k, v, o`` take ``B*(T*H*D + S*Hk*D + S*Hk*Dv + T*H*Dv)*dtype_bytes``; every score
buffer takes ``B*H*T*S*score_bytes``. Scores are kept in at least float32 (``score_bytes``
defaults to ``max(dtype_bytes, 4)``, as ``attnjax.ops`` computes the softmax).

* **naive** materialises ``[B, H, T, S]``: the forward peak holds
  ``NAIVE_FORWARD_SCORE_BUFFERS`` = 2 score buffers (logits and probabilities); a forward plus
  backward of one layer ``NAIVE_TRAINING_SCORE_BUFFERS`` = 6, of which
  ``NAIVE_RESIDUAL_SCORE_BUFFERS`` = 4 stay alive per layer until its backward runs. These
  are XLA's ``memory_analysis()`` of ``attnjax.ops.dot_product_attention`` on CPU
  (B=1, H=8, T=S=2048: forward 2.0 float32 score buffers for float32 and bfloat16 inputs,
  forward+backward 6.06 for float32, each further layer +4.1); other backends differ.
* **chunked** (Rabe & Staats 2021; FlashAttention, Dao et al. 2022) never holds a T x S
  buffer: ``q, k, v, o``, a float32 logsumexp per query row (``B*H*T*4``) and one
  ``chunk_q x chunk_k`` score block per head (``B*H*chunk_q*chunk_k*score_bytes``, chunks
  clipped to T and S). By default the chunks are the kernel's own,
  ``attnjax.ops.chunked.default_blocks(T, S, causal)``: 256 query rows by 1024 keys, 512
  keys when causal. Backward adds the gradients ``dq, dk, dv, do``, the row sums
  ``rowsum(dO * O)`` (another ``B*H*T*4``) and a second block (``dS`` next to ``P``).

Per model: without backward the layers run one after another, so the model's peak is one
layer's. With backward every layer keeps its residuals (naive: ``q, k, v, o`` and 4 score
buffers; chunked: ``q, k, v, o`` and the logsumexp) until its backward, so the model's peak is
``(L - 1) * residual + one layer's forward+backward peak``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import textwrap
from collections.abc import Sequence

from attnjax.ops.chunked import default_blocks

SOFTMAX_FLOPS = 5
SOFTMAX_BACKWARD_FLOPS = 3
NAIVE_FORWARD_SCORE_BUFFERS = 2
NAIVE_TRAINING_SCORE_BUFFERS = 6
NAIVE_RESIDUAL_SCORE_BUFFERS = 4
STATS_BYTES = 4  # logsumexp and rowsum(dO * O) are float32 per query row

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# The seed sentence checked by the report: "128,000 tokens = 16 billion attention
# calculations per layer".
SEED_TOKENS = 128_000
SEED_CALCULATIONS = 16e9


@dataclasses.dataclass(frozen=True)
class Levels:
    """One quantity at the three levels: one head of one sequence, one layer, the model."""

    per_head: int
    per_layer: int
    per_model: int


@dataclasses.dataclass(frozen=True)
class Doubling:
    """``cost(2T, 2S) / cost(T, S)`` of the per-layer figures.

    ``layer_flops`` (attention, chunked count, plus projections and MLP) is None when the
    projections are not counted.
    """

    pairs: float
    naive_flops: float
    chunked_flops: float
    layer_flops: float | None
    naive_score_memory: float
    naive_memory: float
    chunked_memory: float


@dataclasses.dataclass(frozen=True)
class AttentionCost:
    """The result of ``attention_cost``; ``str()`` gives the report, ``to_dict()`` the JSON.

    FLOPs are forward only, or forward plus backward when ``backward``; memory in bytes.
    ``projection_flops`` and ``crossover_seq_len`` are None unless the projections are counted
    (``d_model`` set); ``crossover_seq_len`` is also None for cross-attention (S != T).
    ``projection_flops.per_head`` is 0: the projections and MLP belong to the layer.
    ``attention_flop_share`` is chunked attention / (chunked attention + projections).
    """

    seq_len: int
    kv_len: int
    heads: int
    kv_heads: int
    head_dim: int
    value_dim: int
    layers: int
    batch: int
    causal: bool
    backward: bool
    dtype_bytes: int
    score_bytes: int
    chunk_q: int
    chunk_k: int
    d_model: int | None
    mlp_hidden: int | None
    pairs: Levels
    naive_flops: Levels
    chunked_flops: Levels
    projection_flops: Levels | None
    naive_score_buffers: int
    naive_score_memory: Levels
    naive_memory: Levels
    chunked_memory: Levels
    doubling: Doubling
    crossover_seq_len: int | None
    attention_flop_share: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return format_report(self)


# --------------------------------------------------------------------------- formatting

_SI = ("", "k", "M", "G", "T", "P", "E")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_WORDS = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion")


def _scaled(x: float, base: int, units: Sequence[str]) -> tuple[str, str]:
    """``x`` divided by the largest power of ``base`` that leaves it >= 1, to 3 digits."""
    value, i = float(x), 0
    while abs(value) >= base and i < len(units) - 1:
        value, i = value / base, i + 1
    text = f"{value:.3g}"
    if float(text) >= base and i < len(units) - 1:  # 999.7 rounds to 1e+03
        value, i = value / base, i + 1
        text = f"{value:.3g}"
    if "e" in text:  # 1000 to 1023 of a binary unit
        text = f"{value:.0f}"
    return text, units[i]


def format_si(x: float, unit: str = "") -> str:
    """``16384000000 -> "16.4 G"`` (decimal prefixes, 3 significant digits)."""
    text, prefix = _scaled(x, 1000, _SI)
    return f"{text} {prefix}{unit}".rstrip()


def format_words(x: float) -> str:
    """``16384000000 -> "16.4 billion"`` (short scale)."""
    text, word = _scaled(x, 1000, _WORDS)
    return f"{text} {word}".rstrip()


def format_sci(x: float) -> str:
    """``16384000000 -> "1.64e10"``; numbers below 10,000 are written out."""
    if abs(x) < 10_000:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_bytes(n: float) -> str:
    """``131072000000 -> "122 GiB"`` (binary prefixes, 3 significant digits)."""
    text, unit = _scaled(n, 1024, _BINARY)
    return f"{text} {unit}"


def _count(x: float) -> str:
    return f"{format_sci(x)} ({format_si(x)})" if abs(x) >= 10_000 else format_sci(x)


# --------------------------------------------------------------------------- arithmetic


def _check_positive(name: str, value, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def causal_pairs(seq_len: int, kv_len: int) -> int:
    """Pairs (i, j) with j <= i, i < T, j < S: sum_i min(i + 1, S)."""
    inside = min(seq_len, kv_len)  # rows i < S see i + 1 keys, the rest see all S
    return inside * (inside + 1) // 2 + (seq_len - inside) * kv_len


def _pairs(t: int, s: int, causal: bool) -> int:
    return causal_pairs(t, s) if causal else t * s


def _matmul_flops_per_pair(d: int, dv: int, *, backward: bool, recompute: bool) -> int:
    """Matmul FLOPs per computed score: Q K^T and P V; backward dV, dP, dQ, dK (twice the
    forward) and, with ``recompute``, Q K^T again."""
    matmuls = 2 * d + 2 * dv  # Q K^T and P V
    flops = matmuls
    if backward:
        flops += 2 * matmuls
        if recompute:
            flops += 2 * d
    return flops


def _flops_per_pair(d: int, dv: int, *, backward: bool, recompute: bool) -> int:
    """Attention FLOPs per computed score: forward, plus backward when ``backward``."""
    flops = _matmul_flops_per_pair(d, dv, backward=backward, recompute=recompute)
    flops += SOFTMAX_FLOPS
    if backward:
        flops += SOFTMAX_BACKWARD_FLOPS  # dS = P * (dP - rowsum(dO * O)), then the scale
        if recompute:
            flops += SOFTMAX_FLOPS  # P again, from the logsumexp
    return flops


def _projection_flops(t, s, h, hk, d, dv, d_model, mlp_hidden, backward) -> int:
    """Q, K, V, O projections and the MLP of one sequence in one layer."""
    forward = (
        2 * t * d_model * h * d  # Q
        + 2 * s * d_model * hk * (d + dv)  # K and V
        + 2 * t * h * dv * d_model  # O
        + 2 * 2 * t * d_model * mlp_hidden  # up and down projection of the MLP
    )
    return 3 * forward if backward else forward


def _memory(t, s, b, h, hk, d, dv, *, dtype_bytes, score_bytes, chunk_q, chunk_k):
    """Bytes of one attention call: (naive, chunked) x (forward, training peak, residual)."""
    qkvo = b * (t * h * d + s * hk * d + s * hk * dv + t * h * dv) * dtype_bytes
    score = b * h * t * s * score_bytes
    stats = b * h * t * STATS_BYTES
    block = b * h * min(chunk_q, t) * min(chunk_k, s) * score_bytes
    naive = (
        qkvo + NAIVE_FORWARD_SCORE_BUFFERS * score,
        2 * qkvo + NAIVE_TRAINING_SCORE_BUFFERS * score,
        qkvo + NAIVE_RESIDUAL_SCORE_BUFFERS * score,
    )
    chunked = (qkvo + stats + block, 2 * qkvo + 2 * stats + 2 * block, qkvo + stats)
    return naive, chunked, score


def _crossover(attention_per_pair: int, projections_per_token: int, causal: bool) -> int:
    """Smallest T with attention FLOPs >= projection FLOPs, self-attention (S = T).

    a * T^2 >= c * T gives T >= c / a; causally a * T (T + 1) / 2 >= c * T gives
    T >= 2c / a - 1.
    """
    a, c = attention_per_pair, projections_per_token
    if causal:
        return max(1, -(-(2 * c - a) // a))
    return max(1, -(-c // a))


def _measure(t, s, *, b, h, hk, d, dv, layers, causal, backward, dtype_bytes, score_bytes,
             chunk_q, chunk_k, d_model, mlp_hidden) -> dict:
    """Every figure of ``AttentionCost`` that is not a ratio."""
    naive_per_pair = _flops_per_pair(d, dv, backward=backward, recompute=False)
    chunked_per_pair = _flops_per_pair(d, dv, backward=backward, recompute=True)
    head_pairs = _pairs(t, s, causal)

    def levels(per_head: int, per_layer: int, per_model: int | None = None) -> Levels:
        return Levels(per_head, per_layer, per_layer * layers if per_model is None else per_model)

    memory = dict(dtype_bytes=dtype_bytes, score_bytes=score_bytes, chunk_q=chunk_q,
                  chunk_k=chunk_k)
    head_naive, head_chunked, head_score = _memory(t, s, 1, 1, 1, d, dv, **memory)
    layer_naive, layer_chunked, layer_score = _memory(t, s, b, h, hk, d, dv, **memory)
    if backward:
        buffers = NAIVE_TRAINING_SCORE_BUFFERS
        model_buffers = (layers - 1) * NAIVE_RESIDUAL_SCORE_BUFFERS + buffers

        def memory_levels(head, layer):  # (L - 1) residuals + one layer's fwd+bwd peak
            return Levels(head[1], layer[1], (layers - 1) * layer[2] + layer[1])
    else:
        buffers = model_buffers = NAIVE_FORWARD_SCORE_BUFFERS

        def memory_levels(head, layer):  # layers run one after another
            return Levels(head[0], layer[0], layer[0])

    projection_flops = None
    if d_model is not None:
        per_layer = b * _projection_flops(t, s, h, hk, d, dv, d_model, mlp_hidden, backward)
        projection_flops = Levels(0, per_layer, per_layer * layers)
    return dict(
        pairs=levels(head_pairs, b * h * head_pairs),
        naive_flops=levels(t * s * naive_per_pair, b * h * t * s * naive_per_pair),
        chunked_flops=levels(head_pairs * chunked_per_pair, b * h * head_pairs * chunked_per_pair),
        projection_flops=projection_flops,
        naive_score_buffers=buffers,
        naive_score_memory=levels(
            buffers * head_score, buffers * layer_score, model_buffers * layer_score
        ),
        naive_memory=memory_levels(head_naive, layer_naive),
        chunked_memory=memory_levels(head_chunked, layer_chunked),
    )


def attention_cost(
    seq_len: int,
    *,
    heads: int,
    head_dim: int,
    layers: int = 1,
    batch: int = 1,
    kv_len: int | None = None,
    kv_heads: int | None = None,
    value_dim: int | None = None,
    causal: bool = False,
    dtype_bytes: int = 4,
    score_bytes: int | None = None,
    chunk_q: int | None = None,
    chunk_k: int | None = None,
    backward: bool = False,
    d_model: int | None = None,
    include_projections: bool = False,
    mlp_ratio: int = 4,
) -> AttentionCost:
    """Pairs, FLOPs and memory of attention, naive and chunked (see the module docstring).

    Args:
      seq_len: T, query positions per sequence.
      heads: H, query heads per layer.
      head_dim: D, query/key depth per head.
      layers: L, attention layers of the model.
      batch: B, sequences per call.
      kv_len: S, key/value positions; default T (self-attention).
      kv_heads: Hk, key/value heads; must divide ``heads``; default H (no grouping).
      value_dim: Dv, value depth per head; default D.
      causal: count only pairs with key j <= query i (top-left aligned).
      dtype_bytes: bytes per element of q, k, v, o (4 float32, 2 bfloat16/float16).
      score_bytes: bytes per score; default ``max(dtype_bytes, 4)`` (float32 softmax).
      chunk_q, chunk_k: query and key block of the chunked implementation (clipped to T, S);
        default: the kernel's ``attnjax.ops.chunked.default_blocks(T, S, causal)``.
      backward: add the backward pass to FLOPs and memory (training).
      d_model: model width; when given, projections and MLP are counted.
      include_projections: count them with ``d_model = heads * head_dim`` when ``d_model``
        is None.
      mlp_ratio: MLP hidden width in units of ``d_model``.

    Returns:
      An ``AttentionCost``; ``doubling`` holds the ratios for 2T (and 2S).

    Raises:
      ValueError: naming the argument, for a size that is not a positive integer or
        ``kv_heads`` that does not divide ``heads``.
    """
    for name, value in [("seq_len", seq_len), ("heads", heads), ("head_dim", head_dim),
                        ("layers", layers), ("batch", batch), ("dtype_bytes", dtype_bytes),
                        ("mlp_ratio", mlp_ratio)]:
        _check_positive(name, value)
    for name, value in [("kv_len", kv_len), ("kv_heads", kv_heads), ("value_dim", value_dim),
                        ("score_bytes", score_bytes), ("d_model", d_model),
                        ("chunk_q", chunk_q), ("chunk_k", chunk_k)]:
        _check_positive(name, value, optional=True)
    kv_len = seq_len if kv_len is None else kv_len
    kv_heads = heads if kv_heads is None else kv_heads
    value_dim = head_dim if value_dim is None else value_dim
    score_bytes = max(dtype_bytes, 4) if score_bytes is None else score_bytes
    if heads % kv_heads:
        raise ValueError(f"kv_heads must divide heads: got heads={heads}, kv_heads={kv_heads}")
    if d_model is None and include_projections:
        d_model = heads * head_dim
    mlp_hidden = None if d_model is None else mlp_ratio * d_model

    shape = dict(b=batch, h=heads, hk=kv_heads, d=head_dim, dv=value_dim, layers=layers,
                 causal=causal, backward=backward, dtype_bytes=dtype_bytes,
                 score_bytes=score_bytes, d_model=d_model, mlp_hidden=mlp_hidden)

    def blocks(t: int, s: int) -> dict:  # the kernel's blocks at this length, unless given
        default_q, default_k = default_blocks(t, s, causal)
        return dict(chunk_q=chunk_q or default_q, chunk_k=chunk_k or default_k)

    now = _measure(seq_len, kv_len, **shape, **blocks(seq_len, kv_len))
    doubled = _measure(2 * seq_len, 2 * kv_len, **shape, **blocks(2 * seq_len, 2 * kv_len))
    chunk_q, chunk_k = blocks(seq_len, kv_len).values()

    def ratio(field: str, attention_too: bool = False) -> float:
        def value(figures):
            layer = figures[field].per_layer
            return layer + figures["chunked_flops"].per_layer if attention_too else layer

        return value(doubled) / value(now)

    has_projections = d_model is not None
    doubling = Doubling(
        pairs=ratio("pairs"),
        naive_flops=ratio("naive_flops"),
        chunked_flops=ratio("chunked_flops"),
        layer_flops=ratio("projection_flops", attention_too=True) if has_projections else None,
        naive_score_memory=ratio("naive_score_memory"),
        naive_memory=ratio("naive_memory"),
        chunked_memory=ratio("chunked_memory"),
    )
    crossover = share = None
    if has_projections:
        attention = now["chunked_flops"].per_layer
        share = attention / (attention + now["projection_flops"].per_layer)
        if kv_len == seq_len:
            per_token = _projection_flops(1, 1, heads, kv_heads, head_dim, value_dim, d_model,
                                          mlp_hidden, backward)
            per_pair = heads * _flops_per_pair(head_dim, value_dim, backward=backward,
                                               recompute=True)
            crossover = _crossover(per_pair, per_token, causal)
    return AttentionCost(
        seq_len=seq_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        value_dim=value_dim, layers=layers, batch=batch, causal=causal, backward=backward,
        dtype_bytes=dtype_bytes, score_bytes=score_bytes, chunk_q=chunk_q, chunk_k=chunk_k,
        d_model=d_model, mlp_hidden=mlp_hidden, **now, doubling=doubling,
        crossover_seq_len=crossover, attention_flop_share=share,
    )


# --------------------------------------------------------------------------- benchmarks
# The work and memory the timed experiments (experiments/scaling, parallelism, scale_out)
# divide their measurements by: matmul FLOPs only (what a matmul ceiling compares with).

RECURRENT_GATES = {"simple": 1, "gru": 3, "lstm": 4}  # [x, h] -> gate matmuls per step


def attention_matmul_flops(seq_len: int, *, heads: int, head_dim: int, batch: int = 1,
                           kv_len: int | None = None, value_dim: int | None = None,
                           causal: bool = False, backward: bool = False,
                           recompute: bool = True) -> int:
    """Matmul FLOPs of one attention call (B sequences, H heads), no softmax.

    Forward: ``Q K^T`` and ``P V``, ``2 (D + Dv)`` per computed pair (``4 B H T S D``);
    backward adds dV, dP, dQ and dK (twice the forward) and, with ``recompute`` (chunked,
    flash and ring attention rebuild P from the logsumexp: Dao et al. 2022, sec. 3.1), ``Q
    K^T`` again: 7 ``T S D`` matmuls in all, 3.5x the forward. ``causal`` counts the useful
    pairs only (key j <= query i, ``T (T + 1) / 2``), although an implementation that masks
    a full matrix does all the work.
    """
    kv_len = seq_len if kv_len is None else kv_len
    value_dim = head_dim if value_dim is None else value_dim
    per_pair = _matmul_flops_per_pair(head_dim, value_dim, backward=backward,
                                      recompute=recompute)
    return batch * heads * _pairs(seq_len, kv_len, causal) * per_pair


def naive_score_bytes(seq_len: int, *, heads: int, batch: int = 1, kv_len: int | None = None,
                      backward: bool = False, score_bytes: int = 4) -> int:
    """Bytes of the ``[B, H, T, S]`` score buffers a materialising implementation holds:
    ``NAIVE_FORWARD_SCORE_BUFFERS`` forward, ``NAIVE_TRAINING_SCORE_BUFFERS`` with the
    backward (the module docstring)."""
    kv_len = seq_len if kv_len is None else kv_len
    buffers = NAIVE_TRAINING_SCORE_BUFFERS if backward else NAIVE_FORWARD_SCORE_BUFFERS
    return buffers * batch * heads * seq_len * kv_len * score_bytes


def attention_layer_flops(seq_len: int, *, width: int, heads: int, batch: int = 1,
                          causal: bool = False, backward: bool = False,
                          recompute: bool = False) -> int:
    """Matmul FLOPs of one self-attention layer of model width ``width``: the Q, K, V and
    O projections (``8 B T width^2``) plus ``attention_matmul_flops`` with head dim
    ``width / heads``; backward 3x the projections."""
    if width % heads:
        raise ValueError(f"heads must divide width: got width={width}, heads={heads}")
    d = width // heads
    projections = batch * _projection_flops(seq_len, seq_len, heads, heads, d, d, width, 0,
                                            backward)
    return projections + attention_matmul_flops(seq_len, heads=heads, head_dim=d, batch=batch,
                                                causal=causal, backward=backward,
                                                recompute=recompute)


def recurrent_flops(cell: str, seq_len: int, *, width: int, batch: int = 1,
                    backward: bool = False) -> int:
    """Matmul FLOPs of a recurrent layer (``cell`` in ``RECURRENT_GATES``) on ``[B, T,
    width]``: per step and gate an input and a recurrent ``width x width`` matmul; backward
    3x (gradients for inputs and for weights)."""
    if cell not in RECURRENT_GATES:
        raise ValueError(f"cell must be one of {tuple(RECURRENT_GATES)}, got {cell!r}")
    forward = 2 * batch * seq_len * RECURRENT_GATES[cell] * 2 * width * width
    return 3 * forward if backward else forward


# --------------------------------------------------------------------------- report


def seed_claim_check(cost: AttentionCost) -> str:
    """One sentence on "128,000 tokens = 16 billion attention calculations per layer"."""
    if (cost.seq_len, cost.kv_len, cost.batch) != (SEED_TOKENS, SEED_TOKENS, 1):
        cost = attention_cost(SEED_TOKENS, heads=cost.heads, head_dim=cost.head_dim,
                              layers=cost.layers, causal=cost.causal)
        where = f"at T = {SEED_TOKENS:,} with this model's heads and layers, "
    else:
        where = ""
    # "one layer" first: with one head it ties with "one head" and then the claim holds.
    levels = {"one layer": cost.pairs.per_layer, "one head": cost.pairs.per_head,
              "the model": cost.pairs.per_model}
    closest = min(levels, key=lambda k: abs(math.log(levels[k] / SEED_CALCULATIONS)))
    mask = "causal " if cost.causal else ""
    sentence = (
        f'Seed claim "128,000 tokens = 16 billion attention calculations per layer": '
        f"{where}one head computes {format_sci(cost.pairs.per_head)} {mask}query-key pairs "
        f"({format_words(cost.pairs.per_head)}), a layer of {cost.heads} "
        f"head{'s' if cost.heads > 1 else ''} "
        f"{format_sci(cost.pairs.per_layer)} ({format_words(cost.pairs.per_layer)}) and "
        f"the {cost.layers}-layer model {format_sci(cost.pairs.per_model)}, so "
    )
    if closest == "one layer":
        return sentence + "16 billion is the per-layer count: the claim holds."
    sentence += f"16 billion is the count for {closest}"
    if closest == "one head":
        sentence += (f" (128,000^2 = {format_sci(SEED_TOKENS**2)}): per layer the claim is "
                     f"{cost.heads}x too small")
    if cost.causal:
        sentence += "; causal masking halves every count"
    return sentence + "."


def _doubling_sentence(cost: AttentionCost) -> str:
    x = cost.doubling
    text = (
        f"Doubling T ({cost.seq_len:,} -> {2 * cost.seq_len:,}) multiplies the query-key "
        f"pairs by {x.pairs:.2f}, attention FLOPs by {x.chunked_flops:.2f} "
        f"(naive {x.naive_flops:.2f}), naive memory by {x.naive_memory:.2f} and chunked "
        f"memory by {x.chunked_memory:.2f}"
    )
    if x.layer_flops is None:
        return text + " (set d_model to include the projections and MLP)."
    text += (
        f"; a whole layer with projections and MLP (d_model {cost.d_model:,}) by "
        f"{x.layer_flops:.2f}, since attention is {cost.attention_flop_share:.0%} of its "
        "FLOPs at this length"
    )
    if cost.crossover_seq_len is not None:
        text += f" (attention outweighs them from T = {cost.crossover_seq_len:,})"
    return text + (
        ". 'Roughly quadruples' holds for attention itself, and for a whole layer only far "
        "past that length."
    )


def format_report(cost: AttentionCost) -> str:
    """A small table (per head, per layer, per model) and the two seed-claim sentences."""
    grouping = "" if cost.kv_heads == cost.heads else f" (kv {cost.kv_heads})"
    dims = f"D={cost.head_dim}" + ("" if cost.value_dim == cost.head_dim else
                                   f" Dv={cost.value_dim}")
    mode = "forward+backward" if cost.backward else "forward"
    header = (
        f"attention cost: T={cost.seq_len:,} S={cost.kv_len:,} B={cost.batch} "
        f"H={cost.heads}{grouping} {dims} L={cost.layers}, "
        f"{'causal' if cost.causal else 'not causal'}, {mode}, {cost.dtype_bytes}-byte "
        f"q/k/v/o, {cost.score_bytes}-byte scores, chunks {cost.chunk_q}x{cost.chunk_k}"
    )
    layer_label = f"per layer (x{cost.heads} heads" + (
        f" x{cost.batch} seqs)" if cost.batch > 1 else ")")
    columns = ("", "per head", layer_label, f"per model (x{cost.layers} layers)")
    rows = [
        ("query-key pairs", *map(_count, _levels(cost.pairs))),
        (f"FLOPs naive ({mode})", *map(_count, _levels(cost.naive_flops))),
        (f"FLOPs chunked ({mode})", *map(_count, _levels(cost.chunked_flops))),
    ]
    if cost.projection_flops is not None:
        p = cost.projection_flops
        rows.append(("FLOPs projections + MLP", "-", _count(p.per_layer), _count(p.per_model)))
    memory_mode = "fwd+bwd peak" if cost.backward else "peak"
    rows += [
        (f"memory naive ({memory_mode})", *map(format_bytes, _levels(cost.naive_memory))),
        (f"  of which {cost.naive_score_buffers} score buffers",
         format_bytes(cost.naive_score_memory.per_head),
         format_bytes(cost.naive_score_memory.per_layer), ""),
        (f"memory chunked ({memory_mode})", *map(format_bytes, _levels(cost.chunked_memory))),
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(4)]
    lines = [textwrap.fill(header, width=100), ""]
    for row in [columns, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if cost.backward:
        lines.append(f"(memory per model: {cost.layers - 1} layers' residuals kept for the "
                     "backward pass + one layer's forward+backward peak)")
    else:
        lines.append("(memory per model: one layer's peak, the layers run one after another)")
    for sentence in (_doubling_sentence(cost), seed_claim_check(cost)):
        lines += ["", textwrap.fill(sentence, width=100)]
    return "\n".join(lines)


def _levels(levels: Levels) -> tuple[int, int, int]:
    return levels.per_head, levels.per_layer, levels.per_model


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnjax cost",
        description="Query-key pairs, FLOPs and memory of attention, naive vs chunked.",
    )
    parser.add_argument("--seq-len", type=int, required=True, help="T, query positions")
    parser.add_argument("--heads", type=int, required=True, help="H, query heads per layer")
    parser.add_argument("--head-dim", type=int, required=True, help="D, depth per head")
    parser.add_argument("--layers", type=int, default=1, help="L (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="B (default 1)")
    parser.add_argument("--kv-len", type=int, help="S, key positions (default T)")
    parser.add_argument("--kv-heads", type=int, help="Hk, key/value heads (default H)")
    parser.add_argument("--value-dim", type=int, help="Dv (default D)")
    parser.add_argument("--causal", action="store_true", help="count only keys j <= i")
    parser.add_argument("--dtype", choices=DTYPE_BYTES, default="float32",
                        help="q/k/v/o dtype (default float32)")
    parser.add_argument("--score-dtype", choices=DTYPE_BYTES,
                        help="score dtype (default float32, as attnjax.ops)")
    parser.add_argument("--backward", action="store_true", help="add the backward pass")
    parser.add_argument("--d-model", type=int,
                        help="model width for the projections and MLP (default H*D)")
    parser.add_argument("--attention-only", action="store_true",
                        help="leave out the projections and MLP")
    parser.add_argument("--mlp-ratio", type=int, default=4, help="MLP width / d_model")
    parser.add_argument("--chunk-q", type=int,
                        help="query block (chunked; default: ops.chunked.default_blocks)")
    parser.add_argument("--chunk-k", type=int,
                        help="key block (chunked; default: ops.chunked.default_blocks)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``attnjax cost ...``: prints the report (or ``--json``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.attention_only and args.d_model is not None:
        parser.error("--d-model and --attention-only exclude each other")
    try:
        cost = attention_cost(
            args.seq_len, heads=args.heads, head_dim=args.head_dim, layers=args.layers,
            batch=args.batch, kv_len=args.kv_len, kv_heads=args.kv_heads,
            value_dim=args.value_dim, causal=args.causal, dtype_bytes=DTYPE_BYTES[args.dtype],
            score_bytes=DTYPE_BYTES[args.score_dtype] if args.score_dtype else None,
            chunk_q=args.chunk_q, chunk_k=args.chunk_k, backward=args.backward,
            d_model=args.d_model, include_projections=not args.attention_only,
            mlp_ratio=args.mlp_ratio,
        )
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(cost.to_dict(), indent=2) if args.json else cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
