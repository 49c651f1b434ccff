"""Measured agreement of attnjax attention with its references (the figures behind the
tests' tolerances).

    python -m benchmarks.parity

Prints, over the test suite's shape cases (masks, bias, causal, GQA/MQA, Dv != D), the max
abs error of ``attnjax.ops.dot_product_attention`` against ``jax.nn.dot_product_attention``,
``flax.linen.dot_product_attention`` and a float64 NumPy re-computation (outputs, weights,
gradients), of ``attnjax.nn.MultiHeadAttention`` against
``flax.linen.MultiHeadDotProductAttention`` with transplanted parameters, and whether fully
masked rows stay finite (forward and gradient) in float32, bfloat16 and float16.
"""

from __future__ import annotations

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax import nn, ops
from tests.reference import attention_float64
from tests.test_ops_attention import CASE_IDS, CASES, make_inputs


def max_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main() -> None:
    rows = {"jax.nn": [], "flax.linen": [], "float64 out": [], "float64 weights": [],
            "jax.nn (grads)": []}
    for case in CASES:
        q, k, v, mask, bias, causal = make_inputs(case)
        t, s = q.shape[1], k.shape[1]
        out, weights = ops.dot_product_attention(
            q, k, v, bias=bias, mask=mask, is_causal=causal, return_weights=True
        )
        ref_out, ref_weights = attention_float64(q, k, v, bias=bias, mask=mask, is_causal=causal)
        rows["float64 out"].append(max_error(out, ref_out))
        rows["float64 weights"].append(max_error(weights, ref_weights))
        if q.shape[-1] == v.shape[-1]:
            rows["jax.nn"].append(max_error(out, jax.nn.dot_product_attention(
                q, k, v, bias=bias, mask=mask, is_causal=causal)))

            def loss(fn, q, k, v, bias=bias, mask=mask, causal=causal):
                return jnp.sum(fn(q, k, v, bias=bias, mask=mask, is_causal=causal) ** 2)

            ours = jax.grad(lambda *a: loss(ops.dot_product_attention, *a), (0, 1, 2))(q, k, v)
            theirs = jax.grad(lambda *a: loss(jax.nn.dot_product_attention, *a), (0, 1, 2))(
                q, k, v)
            rows["jax.nn (grads)"].append(max(max_error(a, b) for a, b in zip(ours, theirs,
                                                                              strict=True)))
        if q.shape[2] == k.shape[2]:
            full = ops.combine_masks(mask, ops.causal_mask(t, s) if causal else None)
            rows["flax.linen"].append(
                max_error(out, flax_nn.dot_product_attention(q, k, v, bias=bias, mask=full)))
    print(f"dot_product_attention, fp32, {len(CASES)} cases ({', '.join(CASE_IDS)}):")
    for name, errors in rows.items():
        print(f"  max abs error vs {name:16s} {max(errors):.2e}  ({len(errors)} cases)")

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 32)), jnp.float32)
    ours = nn.MultiHeadAttention(num_heads=4)
    theirs = flax_nn.MultiHeadDotProductAttention(num_heads=4)
    params = theirs.init(jax.random.key(0), x, x)["params"]
    error = max_error(ours.apply({"params": params}, x), theirs.apply({"params": params}, x, x))
    print(f"MultiHeadAttention vs flax MultiHeadDotProductAttention (same params): {error:.2e}")

    q, k, v, *_ = make_inputs(CASES[3])
    keep = np.ones((q.shape[0], 1, q.shape[1], k.shape[1]), bool)
    keep[0] = False
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        def loss(q, k, v):
            out = ops.dot_product_attention(q, k, v, mask=jnp.asarray(keep), is_causal=True)
            return jnp.sum(out.astype(jnp.float32) ** 2), out

        (value, out), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(
            q.astype(dtype), k.astype(dtype), v.astype(dtype))
        finite = all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads)
        zero = float(np.abs(np.asarray(out[0], np.float32)).max())
        print(f"fully masked rows, {jnp.dtype(dtype).name:8s}: output max |x| {zero:.1f}, "
              f"loss finite {np.isfinite(float(value))}, gradients finite {finite}")


if __name__ == "__main__":
    main()
