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


@pytest.mark.parametrize("devices", [2, 4, 8])
@pytest.mark.parametrize("is_causal", [False, True])
def test_ring_attention_equals_single_device_forward_and_gradients(devices, is_causal):
    q, k, v, ct = inputs()
    mesh = mesh_of(devices)
    ring = lambda q, k, v: ring_attention(q, k, v, mesh=mesh, is_causal=is_causal)  # noqa: E731
    ref = lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=is_causal)  # noqa: E731
    np.testing.assert_allclose(jax.jit(ring)(q, k, v), ref(q, k, v), atol=TOL, rtol=0)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * ct), (0, 1, 2)))(q, k, v)
             for f in (ring, ref)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_ring_attention_cross_lengths_and_bad_inputs():
    q, k, v, _ = inputs(t=16, s=48)
    mesh = mesh_of(4)
    np.testing.assert_allclose(ring_attention(q, k, v, mesh=mesh),
                               ops.dot_product_attention(q, k, v), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        ring_attention(q[:, :10], k, v, mesh=mesh)
    with pytest.raises(ValueError, match="no axis 'model'"):
        ring_attention(q, k, v, mesh=mesh, axis_name="model")
