"""Ring attention on 2, 4 and 8 (virtual CPU) devices against single-device attention.

Tolerance 2e-5 fp32, forward and gradients (the Step 7 acceptance bound)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import ops
from attnjax.ops.ring import ring_attention

TOL = 2e-5


def mesh_of(n):
    return jax.sharding.Mesh(np.array(jax.devices()[:n]), ("seq",))


def inputs(t=32, s=32, h=4, hk=2, d=8, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((2, t, h, d)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, s, hk, d)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((2, s, hk, d)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, t, h, d)), jnp.float32)
    return q, k, v, ct


def assert_same_output_and_gradients(ring, ref, q, k, v, ct):
    np.testing.assert_allclose(jax.jit(ring)(q, k, v), ref(q, k, v), atol=TOL, rtol=0)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * ct), (0, 1, 2)))(q, k, v)
             for f in (ring, ref)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("devices", [2, 4, 8])
@pytest.mark.parametrize("is_causal", [False, True])
def test_ring_attention_equals_single_device_forward_and_gradients(devices, is_causal):
    q, k, v, ct = inputs()
    mesh = mesh_of(devices)
    ring = lambda q, k, v: ring_attention(q, k, v, mesh=mesh, is_causal=is_causal)  # noqa: E731
    ref = lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=is_causal)  # noqa: E731
    assert_same_output_and_gradients(ring, ref, q, k, v, ct)


def test_ring_attention_cross_lengths_and_bad_inputs():
    q, k, v, _ = inputs(t=16, s=48)
    mesh = mesh_of(4)
    np.testing.assert_allclose(jax.jit(lambda *a: ring_attention(*a, mesh=mesh))(q, k, v),
                               ops.dot_product_attention(q, k, v), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        ring_attention(q[:, :10], k, v, mesh=mesh)
    with pytest.raises(ValueError, match="no axis 'model'"):
        ring_attention(q, k, v, mesh=mesh, axis_name="model")


@pytest.mark.parametrize("is_causal", [False, True])
def test_ring_attention_tiles_within_a_device_and_pads_ragged_tiles(is_causal):
    """48 positions per device in tiles of 32 x 20 (ragged, padded): still exact."""
    q, k, v, ct = inputs(t=96, s=96)
    mesh = mesh_of(2)
    ring = lambda q, k, v: ring_attention(q, k, v, mesh=mesh, is_causal=is_causal,  # noqa: E731
                                          block_q=32, block_k=20)
    ref = lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=is_causal)  # noqa: E731
    assert_same_output_and_gradients(ring, ref, q, k, v, ct)


@pytest.mark.parametrize("t, s", [(16, 48), (48, 16)])  # S/n > T/n and S/n < T/n
def test_causal_ring_attention_between_different_lengths(t, s):
    q, k, v, ct = inputs(t=t, s=s)
    mesh = mesh_of(4)
    ring = lambda q, k, v: ring_attention(q, k, v, mesh=mesh, is_causal=True)  # noqa: E731
    ref = lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    assert_same_output_and_gradients(ring, ref, q, k, v, ct)


def test_ring_attention_memory_per_device_grows_linearly_with_length():
    """No [T/n, S/n] score block: with fixed 64 x 64 tiles, doubling T doubles the compiled
    fwd+bwd's per-device temporaries (it would quadruple them with score blocks)."""
    from attnjax.parallel import measure

    mesh = mesh_of(8)
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "seq"))
    fn = jax.grad(lambda q, k, v: jnp.sum(ring_attention(q, k, v, mesh=mesh, block_q=64,
                                                         block_k=64)), (0, 1, 2))
    temp = []
    for t in (2048, 4096):
        arg = jax.ShapeDtypeStruct((1, t, 8, 64), jnp.float32, sharding=spec)
        compiled = jax.jit(fn, in_shardings=(spec,) * 3, out_shardings=(spec,) * 3).lower(
            arg, arg, arg).compile()
        temp.append(measure.memory(compiled)["temp_bytes"])
    assert temp[1] / temp[0] == pytest.approx(2.0, abs=0.5), temp  # 4 with score blocks


def test_ring_attention_with_a_traced_scale_gets_its_gradient():
    q, k, v, ct = inputs()
    mesh = mesh_of(4)

    def loss(temperature, fn):
        return jnp.sum(fn(q, k, v, scale=temperature) * ct)

    ring = lambda *a, **kw: ring_attention(*a, mesh=mesh, **kw)  # noqa: E731
    got = jax.jit(jax.value_and_grad(lambda t: loss(t, ring)))(0.3)
    want = jax.value_and_grad(lambda t: loss(t, ops.dot_product_attention))(0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=TOL)


def test_ring_attention_under_vmap():
    q, k, v, ct = inputs()  # [2, 32, H, D]: vmap over the leading axis, B=1 inside
    mesh = mesh_of(4)
    ring = jax.vmap(lambda q, k, v: ring_attention(q[None], k[None], v[None], mesh=mesh,
                                                   is_causal=True)[0])
    ref = lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    assert_same_output_and_gradients(ring, ref, q, k, v, ct)
