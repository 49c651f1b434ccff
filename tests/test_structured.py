"""Structured attention (``ops.structure``): windows, causal alignments, lengths, segment ids,
prefix LM, ``mask_fn`` and ``score_fn``, alone and combined, through ``chunked`` (blocked,
skipping empty blocks) against the dense ``xla`` reference, forward and backward; jax.nn's
arguments against ``jax.nn.dot_product_attention`` itself; the block schedule against a
brute-force classification; clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnjax import ops
from attnjax.ops import structure as structure_lib
from tests.helpers import random_qkv as _qkv

TOL = 2e-5


def _random_kwargs(rng, b, t, s, h, draw):
    """A random combination of every structured argument (``draw``: which parts)."""
    kw = {}
    if draw["causal"]:
        kw["is_causal"] = "bottom_right" if draw["bottom_right"] else True
    if draw["window"]:
        kw["local_window_size"] = (int(rng.integers(0, t)), int(rng.integers(0, t)))
    if draw["lengths"]:
        kw["query_seq_lengths"] = jnp.asarray(rng.integers(1, t + 1, size=b), jnp.int32)
        kw["key_value_seq_lengths"] = jnp.asarray(rng.integers(1, s + 1, size=b), jnp.int32)
    if draw["segments"]:
        ids = lambda n: jnp.asarray(np.sort(rng.integers(0, 4, size=(b, n)), 1), jnp.int32)  # noqa: E731
        kw["query_segment_ids"], kw["key_value_segment_ids"] = ids(t), ids(s)
    if draw["prefix"] and draw["causal"]:
        kw["prefix_lengths"] = jnp.asarray(rng.integers(0, s + 1, size=b), jnp.int32)
    if draw["mask_fn"]:
        period = int(rng.integers(2, 9))
        kw["mask_fn"] = lambda bb, hh, qi, ki: (qi // period) != (ki // period) + 1
    if draw["score_fn"] == "alibi":
        slopes = jnp.asarray(2.0 ** -np.arange(1, h + 1), jnp.float32)
        kw["score_fn"] = lambda sc, bb, hh, qi, ki: sc + slopes[hh] * -jnp.abs(qi - ki)
    elif draw["score_fn"] == "softcap":
        kw["score_fn"] = lambda sc, bb, hh, qi, ki: 2.0 * jnp.tanh(sc / 2.0)
    return kw


def _chunked(q, k, v, kw, block_q, block_k):
    """``chunked_attention`` with small blocks (so that blocks are skipped) and the
    structure ``dot_product_attention`` would build."""
    kw = dict(kw)
    is_causal = kw.pop("is_causal", False)
    st = structure_lib.make_structure(q.shape[:-3], q.shape[-3], k.shape[-3],
                                      is_causal=is_causal, **kw)
    return ops.chunked_attention(q, k, v, structure=st, block_q=block_q, block_k=block_k)


PARTS = st.fixed_dictionaries({
    "causal": st.booleans(), "bottom_right": st.booleans(), "window": st.booleans(),
    "lengths": st.booleans(), "segments": st.booleans(), "prefix": st.booleans(),
    "mask_fn": st.booleans(), "score_fn": st.sampled_from([None, "alibi", "softcap"]),
})


@settings(max_examples=5, deadline=None)
@given(draw=PARTS, seed=st.integers(0, 2**16), t=st.integers(1, 40), s=st.integers(1, 40),
       block_q=st.sampled_from([4, 8, 16]), block_k=st.sampled_from([4, 8, 16]),
       hk=st.sampled_from([1, 2]))
def test_random_structures_match_the_dense_reference_forward_and_backward(
        draw, seed, t, s, block_q, block_k, hk):
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, 2, t, s, 4, hk)
    kw = _random_kwargs(rng, 2, t, s, 4, draw)
    ref = ops.dot_product_attention(q, k, v, implementation="xla", **kw)
    out = _chunked(q, k, v, kw, block_q, block_k)
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=TOL)
    cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    g_ref = jax.grad(lambda *a: jnp.sum(ops.dot_product_attention(
        *a, implementation="xla", **kw) * cot), argnums=(0, 1, 2))(q, k, v)
    g_out = jax.grad(lambda *a: jnp.sum(_chunked(*a, kw, block_q, block_k) * cot),
                     argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_out, g_ref, strict=True):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=TOL)


def test_score_fn_closure_gets_its_gradient_through_the_recomputation():
    """A learned relative-position table the score function closes over (T5-style)."""
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, 2, 37, 37, 4, 2)
    table = jnp.asarray(rng.normal(size=(80,)), jnp.float32)

    def loss(table, impl):
        fn = lambda sc, b, h, qi, ki: sc + table[qi - ki + 40]  # noqa: E731
        if impl == "xla":
            out = ops.dot_product_attention(q, k, v, is_causal=True, score_fn=fn,
                                            implementation="xla")
        else:
            out = _chunked(q, k, v, {"is_causal": True, "score_fn": fn}, 8, 8)
        return jnp.sum(out ** 2)

    ref = jax.grad(loss)(table, "xla")
    got = jax.jit(jax.grad(loss), static_argnums=1)(table, "chunked")
    assert float(jnp.abs(ref).max()) > 1e-3
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=1e-4)


def test_structures_work_under_jit_vmap_and_strict_modes():
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 3, 24, 24, 2, 2)
    seg = jnp.asarray(np.sort(rng.integers(0, 3, size=(3, 24)), 1), jnp.int32)
    kw = {"is_causal": True, "local_window_size": (5, 0)}

    def one(q, k, v, seg):
        return ops.dot_product_attention(q, k, v, implementation="chunked",
                                         query_segment_ids=seg, **kw)

    batched = jax.jit(jax.vmap(one))(q[:, None], k[:, None], v[:, None], seg[:, None])
    ref = ops.dot_product_attention(q, k, v, implementation="xla", query_segment_ids=seg, **kw)
    np.testing.assert_allclose(batched[:, 0], ref, atol=TOL)
    with jax.debug_infs(True), jax.numpy_rank_promotion("raise"):
        for impl in ("xla", "chunked"):
            out = ops.dot_product_attention(
                q, k, v, implementation=impl, query_segment_ids=seg,
                key_value_seq_lengths=jnp.asarray([24, 10, 0], jnp.int32), **kw)
            jax.grad(lambda q, impl=impl: jnp.sum(ops.dot_product_attention(
                q, k, v, implementation=impl, query_segment_ids=seg, **kw)))(q)
            assert bool(jnp.all(out[2] == 0))  # example 2 sees no key: zeros


# --------------------------------------------------------------------------- ring (8 devices)


def _mesh(n=8):
    return jax.sharding.Mesh(np.array(jax.devices()[:n]), ("seq",))


@settings(max_examples=5, deadline=None)
@given(draw=PARTS, seed=st.integers(0, 2**16), t=st.sampled_from([8, 24, 40]),
       s=st.sampled_from([8, 16, 40]), block=st.sampled_from([2, 4]))
def test_ring_attention_on_8_devices_matches_the_dense_reference_forward_and_backward(
        draw, seed, t, s, block):
    """Structures in global positions, evaluated per device and per tile (tiles of 2 or 4
    within each device's block of T/8 and S/8, so tiles and whole ring steps are skipped)."""
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, 2, t, s, 4, 2)
    kw = _random_kwargs(rng, 2, t, s, 4, draw)
    mesh = _mesh()

    def ring(q, k, v):
        return ops.ring_attention(q, k, v, mesh=mesh, block_q=block, block_k=block, **kw)

    def ref(q, k, v):
        return ops.dot_product_attention(q, k, v, implementation="xla", **kw)

    np.testing.assert_allclose(jax.jit(ring)(q, k, v), ref(q, k, v), atol=TOL, rtol=TOL)
    cot = jnp.asarray(rng.normal(size=(2, t, 4, 8)), jnp.float32)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cot), (0, 1, 2)))(q, k, v)
             for f in (ring, ref)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def test_ring_score_fn_closure_gradient_is_summed_over_the_devices():
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, 1, 32, 32, 2, 2)
    table = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
    mesh = _mesh()

    def loss(table, ring):
        fn = lambda sc, b, h, qi, ki: sc + table[qi - ki + 32]  # noqa: E731
        kw = {"is_causal": True, "local_window_size": (9, 0), "score_fn": fn}
        out = (ops.ring_attention(q, k, v, mesh=mesh, block_q=2, block_k=2, **kw) if ring
               else ops.dot_product_attention(q, k, v, implementation="xla", **kw))
        return jnp.sum(out ** 2)

    want = jax.grad(loss)(table, False)
    got = jax.jit(jax.grad(loss), static_argnums=1)(table, True)
    assert float(jnp.abs(want).max()) > 1e-3
    np.testing.assert_allclose(got, want, atol=TOL, rtol=1e-4)


def test_ring_attention_shard_takes_per_device_segment_ids_inside_shard_map():
    """Document packing across device boundaries: the key segment ids travel the ring."""
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 2, 48, 48, 4, 1)
    seg = jnp.asarray(np.sort(rng.integers(0, 5, size=(2, 48)), 1), jnp.int32)
    mesh = _mesh()
    spec = P(None, "seq", None, None)
    fn = jax.shard_map(
        lambda q, k, v, seg: ops.ring_attention_shard(q, k, v, axis_name="seq",
                                                      is_causal=True, query_segment_ids=seg),
        mesh=mesh, in_specs=(spec, spec, spec, P(None, "seq")), out_specs=spec)
    want = ops.dot_product_attention(q, k, v, implementation="xla", is_causal=True,
                                     query_segment_ids=seg)
    np.testing.assert_allclose(jax.jit(fn)(q, k, v, seg), want, atol=TOL, rtol=TOL)


def test_ring_rejects_bad_structured_arguments_naming_them():
    q, k, v = _qkv(np.random.default_rng(0), 2, 16, 16, 2, 2)
    with pytest.raises(ValueError, match="query_segment_ids"):
        ops.ring_attention(q, k, v, mesh=_mesh(), query_segment_ids=jnp.zeros((2, 8), jnp.int32))
    with pytest.raises(ValueError, match="is_causal"):
        ops.ring_attention(q, k, v, mesh=_mesh(), is_causal="diagonal")
    with pytest.raises(ValueError, match="prefix_lengths"):
        ops.ring_attention(q, k, v, mesh=_mesh(), prefix_lengths=jnp.zeros((2,), jnp.int32))


# --------------------------------------------------------------------------- jax.nn parity


@pytest.mark.parametrize("kw", [
    {"is_causal": True},
    {"local_window_size": 3},
    {"local_window_size": (4, 0), "is_causal": True},
    {"query_seq_lengths": [5, 16], "key_value_seq_lengths": [9, 3]},
    {"key_value_seq_lengths": [16, 1], "is_causal": True, "local_window_size": (2, 2)},
], ids=["causal", "window", "causal-window", "lengths", "all"])
@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_jax_nn_arguments_behave_as_jax_nn(kw, implementation):
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, 2, 16, 16, 4, 2, d=8, dv=8)
    kw = {n: jnp.asarray(x, jnp.int32) if isinstance(x, list) else x for n, x in kw.items()}
    ref, ref_lse = jax.nn.dot_product_attention(q, k, v, return_residual=True, **kw)
    out, lse = ops.dot_product_attention(q, k, v, implementation=implementation,
                                         return_residual=True, **kw)
    # Rows that see no key: jax.nn averages the values (uniform weights over its masked
    # placeholders), attnjax gives zeros (documented). Compare every other row.
    seen = ops.dot_product_attention_weights(q, k, is_causal=bool(kw.get("is_causal")),
                                             mask=_dense(kw, 2, 16, 16)).sum(-1) > 0.5
    seen = jnp.swapaxes(seen, 1, 2)  # [B, T, H]
    np.testing.assert_allclose(jnp.where(seen[..., None], out, 0),
                               jnp.where(seen[..., None], ref, 0), atol=TOL)
    np.testing.assert_allclose(jnp.where(seen, lse, 0), jnp.where(seen, ref_lse, 0), atol=1e-5)
    if "query_seq_lengths" in kw:  # jax.nn zeros the padded queries' outputs, as we do
        pad = jnp.arange(16)[None, :] >= kw["query_seq_lengths"][:, None]
        assert bool(jnp.all(out[pad] == 0)) and bool(jnp.all(ref[pad] == 0))


def _dense(kw, b, t, s):
    """The jax.nn arguments of ``kw`` as one dense ``[B, 1, T, S]`` mask (causal aside)."""
    m = jnp.ones((b, 1, t, s), bool)
    if "local_window_size" in kw:
        w = kw["local_window_size"]
        m = m & ops.local_window_mask(t, s, window=w)[None, None]
    if "query_seq_lengths" in kw:
        m = m & (jnp.arange(t)[None, :, None] < kw["query_seq_lengths"][:, None, None])[:, None]
    if "key_value_seq_lengths" in kw:
        m = m & (jnp.arange(s)[None, None, :] < kw["key_value_seq_lengths"][:, None, None])[:, None]
    return m


# --------------------------------------------------------------------------- the schedule


@settings(max_examples=10, deadline=None)
@given(draw=PARTS, seed=st.integers(0, 2**16), t=st.integers(1, 50), s=st.integers(1, 50),
       block_q=st.sampled_from([3, 8, 16]), block_k=st.sampled_from([5, 8, 16]))
def test_schedule_skips_only_empty_blocks_and_calls_full_only_full_ones(
        draw, seed, t, s, block_q, block_k):
    rng = np.random.default_rng(seed)
    kw = _random_kwargs(rng, 2, t, s, 4, draw)
    kw.pop("score_fn", None)
    is_causal = kw.pop("is_causal", False)
    st_ = structure_lib.make_structure((2,), t, s, is_causal=is_causal, **kw)
    n_q, n_k = -(-t // block_q), -(-s // block_k)
    visit, count, full = structure_lib.block_schedule(
        st_, t=t, s=s, block_q=block_q, block_k=block_k, n_q=n_q, n_k=n_k,
        has_dense_mask=False, nb=2, h=4)
    if st_ is None:
        keep = np.ones((2, 4, t, s), bool)
    else:
        keep = np.asarray(jnp.broadcast_to(
            structure_lib.keep(st_, *structure_lib.dense(st_, 2, 4, t, s)), (2, 4, t, s)))
    visit, count, full = map(np.asarray, (visit, count, full))
    for i in range(n_q):
        visited = set(visit[i, :count[i]].tolist())
        assert visit[i, :count[i]].tolist() == sorted(visited)
        for j in range(n_k):
            blk = keep[:, :, i * block_q:(i + 1) * block_q, j * block_k:(j + 1) * block_k]
            if blk.any():
                assert j in visited, (i, j)  # never skip a block with a kept score
            if j in visited:
                place = visit[i].tolist().index(j)
                if full[i, place]:
                    assert blk.all() and blk.shape[-1] == block_k
    # Exactness for the analytic parts: a causal window visits only the band.
    if draw["window"] and not (draw["segments"] or draw["mask_fn"] or draw["lengths"]):
        for i in range(n_q):
            for j in visit[i, :count[i]]:
                blk = keep[:, :, i * block_q:(i + 1) * block_q, j * block_k:(j + 1) * block_k]
                assert blk.any()


def test_a_causal_sliding_window_visits_a_band_of_blocks():
    st_ = structure_lib.make_structure((1,), 4096, 4096, is_causal=True,
                                       local_window_size=(512, 0))
    _, count, full = structure_lib.block_schedule(
        st_, t=4096, s=4096, block_q=256, block_k=512, n_q=16, n_k=8, has_dense_mask=False)
    assert int(np.max(count)) == 2  # 256 rows and 512 keys back span at most 2 key blocks
    assert int(np.sum(count)) < 16 * 8 // 3


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kw, error, match", [
    ({"local_window_size": (-1, 2)}, ValueError, "local_window_size"),
    ({"local_window_size": (1, 2, 3)}, ValueError, "local_window_size"),
    ({"query_seq_lengths": jnp.zeros((3,), jnp.int32)}, ValueError,
     r"query_seq_lengths.*\[2\]"),
    ({"query_seq_lengths": jnp.zeros((2,), jnp.float32)}, TypeError, "integer"),
    ({"query_segment_ids": jnp.zeros((2, 5), jnp.int32)}, ValueError,
     r"query_segment_ids.*\[2, 8\]"),
    ({"key_value_segment_ids": jnp.zeros((2, 8), jnp.int32)}, ValueError, "query_segment_ids"),
    ({"prefix_lengths": jnp.zeros((2,), jnp.int32)}, ValueError, "is_causal"),
    ({"is_causal": "top_right"}, ValueError, "bottom_right"),
    ({"mask_fn": 3}, TypeError, "mask_fn"),
])
def test_bad_structured_arguments_raise_at_trace_time(kw, error, match):
    q, k, v = _qkv(np.random.default_rng(0), 2, 8, 8, 2, 2)
    with pytest.raises(error, match=match):
        jax.jit(lambda q: ops.dot_product_attention(q, k, v, **kw)).lower(q)


def test_cudnn_refuses_what_it_cannot_do():
    """(flash takes every structure: tests/test_flash_structured.py.)"""
    q, k, v = _qkv(np.random.default_rng(0), 1, 8, 8, 2, 2)
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="NVIDIA GPU"):
            ops.dot_product_attention(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="segment"):
        ops.dot_product_attention(q, k, v, implementation="cudnn",
                                  query_segment_ids=jnp.zeros((1, 8), jnp.int32))
