"""Chunked (memory-efficient) attention against the materialised reference.

Tolerance: 2e-5 absolute in float32, forward and gradients (the acceptance bound); the
reference is ``ops.dot_product_attention(implementation="xla")``, itself checked against
jax.nn, flax and float64 in test_ops_attention.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnjax import ops
from tests.reference import attention_float64

TOL = 2e-5


def reference(q, k, v, **kw):
    return ops.dot_product_attention(q, k, v, implementation="xla", **kw)


def chunked(block_q, block_k):
    return lambda q, k, v, **kw: ops.chunked_attention(
        q, k, v, block_q=block_q, block_k=block_k, **kw
    )


def inputs(b, t, s, h, hk, d, dv, *, mask=False, bias=False, seed=0, masked_row=True):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, s, hk, d)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, s, hk, dv)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((b, t, h, dv)), jnp.float32)
    kw = {}
    if mask:
        keep = rng.random((b, 1, t, s)) < 0.7
        if masked_row:
            keep[:, :, min(1, t - 1)] = False  # a query row that sees no key
        kw["mask"] = jnp.asarray(keep)
    if bias:
        kw["bias"] = jnp.asarray(rng.standard_normal((1, h, t, s)), jnp.float32)
    return (q, k, v), ct, kw


def max_errors(fn, args, ct, kw, is_causal):
    """Max abs error of outputs and of d/d(q, k, v[, bias]) of sum(out * ct)."""
    bias = kw.pop("bias", None)
    n = 4 if bias is not None else 3

    def loss(attend, q, k, v, bias=None):
        return jnp.sum(attend(q, k, v, bias=bias, is_causal=is_causal, **kw) * ct)

    got = jax.jit(lambda *a: fn(*a[:3], bias=a[3] if n == 4 else None, is_causal=is_causal, **kw))
    want = reference(*args, bias=bias, is_causal=is_causal, **kw)
    out = got(*args, *([bias] if n == 4 else []))
    g_got = jax.jit(jax.grad(lambda *a: loss(fn, *a), argnums=tuple(range(n))))(
        *args, *([bias] if n == 4 else [])
    )
    g_want = jax.grad(lambda *a: loss(reference, *a), argnums=tuple(range(n)))(
        *args, *([bias] if n == 4 else [])
    )
    errors = [float(jnp.max(jnp.abs(out - want)))]
    errors += [float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_got, g_want, strict=True)]
    assert all(np.isfinite(errors)), errors
    return out, errors


# (b, t, s, h, hk, d, dv, mask, bias, causal, block_q, block_k)
CASES = {
    "plain-one-block": (2, 16, 16, 2, 2, 8, 8, False, False, False, 16, 16),
    "plain-ragged": (2, 37, 29, 4, 4, 8, 8, False, False, False, 16, 8),
    "causal-ragged": (2, 37, 37, 4, 2, 8, 8, False, False, True, 16, 8),
    "causal-q-longer": (1, 45, 30, 2, 1, 8, 8, False, False, True, 8, 16),
    "causal-k-longer": (1, 30, 45, 2, 2, 8, 8, False, False, True, 16, 8),
    "gqa-mask-bias-causal": (2, 37, 29, 4, 2, 8, 8, True, True, True, 16, 8),
    "mqa-mask": (1, 64, 64, 4, 1, 16, 8, True, False, True, 16, 16),
    "dv-differs-cross": (1, 50, 70, 4, 4, 16, 24, True, True, False, 32, 16),
    "bias-causal-single": (2, 40, 40, 2, 2, 8, 8, False, True, True, 40, 40),
    "blocks-bigger-than-input": (1, 5, 7, 2, 2, 4, 4, True, False, False, 64, 64),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_reference_forward_and_backward(case):
    *shape, mask, bias, causal, bq, bk = case
    args, ct, kw = inputs(*shape, mask=mask, bias=bias)
    out, errors = max_errors(chunked(bq, bk), args, ct, kw, causal)
    assert max(errors) < TOL, errors
    if mask:  # the row that sees no key is exactly zero
        assert jnp.all(out[:, 1] == 0)


@settings(max_examples=6, deadline=None)
@given(
    t=st.integers(1, 24),
    s=st.integers(1, 24),
    hk=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    block_q=st.integers(1, 9),
    block_k=st.integers(1, 9),
    causal=st.booleans(),
    mask=st.booleans(),
)
def test_random_shapes_and_blocks(t, s, hk, groups, block_q, block_k, causal, mask):
    args, ct, kw = inputs(1, t, s, hk * groups, hk, 4, 4, mask=mask, masked_row=False)
    _, errors = max_errors(chunked(block_q, block_k), args, ct, kw, causal)
    assert max(errors) < TOL, errors


def test_float64_matches_numpy_recomputation():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        q, k, v = (rng.standard_normal((2, 19, 2, 8)) for _ in range(3))
        got = ops.chunked_attention(
            jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), is_causal=True, block_q=8, block_k=4
        )
        assert got.dtype == jnp.float64
        want, _ = attention_float64(q, k, v, is_causal=True)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


def test_bfloat16_keeps_dtype_and_accuracy():
    (q, k, v), _, _ = inputs(1, 33, 33, 2, 2, 16, 16)
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    out = ops.chunked_attention(*low, is_causal=True, block_q=8, block_k=8)
    assert out.dtype == jnp.bfloat16
    want = reference(*low, is_causal=True)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), atol=2e-2)


def test_causal_blocks_above_the_diagonal_are_skipped_not_masked():
    # NaN keys/values in the last key block: masking would still compute 0 * NaN = NaN for
    # every query block, skipping leaves the query blocks before the diagonal untouched.
    (q, k, v), ct, _ = inputs(1, 64, 64, 2, 2, 8, 8)
    k = k.at[:, 48:].set(jnp.nan)
    v = v.at[:, 48:].set(jnp.nan)
    attend = chunked(16, 16)
    out = attend(q, k, v, is_causal=True)
    assert jnp.all(jnp.isfinite(out[:, :48])) and not jnp.all(jnp.isfinite(out[:, 48:]))
    grad_q = jax.grad(lambda q: jnp.sum(attend(q, k, v, is_causal=True) * ct))(q)
    assert jnp.all(jnp.isfinite(grad_q[:, :48]))
    # and without the causal mask the same NaNs reach every row
    assert not jnp.any(jnp.isfinite(attend(q, k, v)))


def test_memory_is_linear_no_score_sized_buffer():
    # XLA's own buffer assignment for forward + backward at N=4096: the materialised
    # implementation needs several [H, N, N] buffers (512 MiB each here), chunked blocks only.
    n, h, d = 4096, 8, 64
    x = jax.ShapeDtypeStruct((1, n, h, d), jnp.float32)

    def temp_bytes(implementation):
        def loss(q, k, v):
            out = ops.dot_product_attention(q, k, v, implementation=implementation)
            return jnp.sum(out * out)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    score = h * n * n * 4
    assert temp_bytes("xla") > score
    assert temp_bytes("chunked") < score / 8


def test_transforms_vmap_and_grad_of_jit():
    (q, k, v), ct, kw = inputs(3, 20, 20, 2, 2, 8, 8, mask=True)
    attend = chunked(8, 8)
    batched = jax.vmap(lambda q, k, v, m: attend(q, k, v, mask=m, is_causal=True))(
        q[:, None], k[:, None], v[:, None], kw["mask"][:, None]
    )[:, 0]
    want = reference(q, k, v, is_causal=True, **kw)
    np.testing.assert_allclose(batched, want, atol=TOL)


def test_dispatch_and_errors():
    assert ops.choose_implementation(1024, 1024, backend="cpu") == "chunked"
    assert ops.choose_implementation(512, 512, backend="cpu") == "chunked"
    assert ops.choose_implementation(256, 256, backend="cpu") == "xla"
    assert ops.choose_implementation(4096, 4096, backend="cpu", return_weights=True) == "xla"
    assert ops.choose_implementation(4096, 4096, backend="cpu", dropout_rate=0.1) == "xla"
    assert ops.choose_implementation(4096, 4096, backend="gpu") == "xla"
    (q, k, v), _, _ = inputs(1, 8, 8, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="return_weights=True needs implementation='xla'"):
        ops.dot_product_attention(q, k, v, implementation="chunked", return_weights=True)
    with pytest.raises(ValueError, match="has no attention dropout"):
        ops.dot_product_attention(
            q, k, v, implementation="chunked", dropout_rate=0.1, dropout_rng=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="`block_q` and `block_k` must be >= 1"):
        ops.chunked_attention(q, k, v, block_q=0)
