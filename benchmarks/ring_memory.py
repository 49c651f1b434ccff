"""Per-device memory of ring attention vs the number of devices (simulated CPU devices).

XLA's buffer assignment (``compiled.memory_analysis()``) of forward+backward, per device, for
the sequence sharded over 1, 2, 4 and 8 devices of one process, next to the unsharded
``ops.dot_product_attention`` (xla) and ``ops.chunked_attention``. Static sizes: what the
compiled program allocates (temporaries + arguments + outputs), not a timing.

    python -m benchmarks.ring_memory [--length 4096] [--heads 8] [--head-dim 64]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from attnjax import ops  # noqa: E402


def per_device_bytes(fn, *args) -> dict:
    stats = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), (0, 1, 2))).lower(*args) \
        .compile().memory_analysis()
    total = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
             + stats.output_size_in_bytes - stats.alias_size_in_bytes)
    return {"temp_mib": stats.temp_size_in_bytes / 2**20, "total_mib": total / 2**20}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args(argv)
    shape = (1, args.length, args.heads, args.head_dim)
    q, k, v = (jax.random.normal(jax.random.key(i), shape) for i in range(3))
    print(f"fwd+bwd, B=1, T=S={args.length}, H={args.heads}, D={args.head_dim}, fp32, "
          f"causal={args.causal}; MiB per device (XLA buffer assignment)")
    for name, impl in (("xla, 1 device", "xla"), ("chunked, 1 device", "chunked")):
        fn = lambda q, k, v, impl=impl: ops.dot_product_attention(  # noqa: E731
            q, k, v, is_causal=args.causal, implementation=impl)
        print(f"  {name:<22} {per_device_bytes(fn, q, k, v)}")
    for n in (1, 2, 4, 8):
        if n > len(jax.devices()):
            break
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:n]), ("seq",))
        fn = lambda q, k, v, mesh=mesh: ops.ring_attention(  # noqa: E731
            q, k, v, mesh=mesh, is_causal=args.causal)
        print(f"  {f'ring, {n} devices':<22} {per_device_bytes(fn, q, k, v)}")


if __name__ == "__main__":
    main()
