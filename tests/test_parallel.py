"""Data-parallel and FSDP training on 8 virtual CPU devices equal one device (same global
batch) within 1e-5 per step over 20 steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import nn, parallel, train


def lm_setup():
    cfg = nn.TransformerConfig(vocab_size=17, model_dim=32, num_heads=4, num_layers=2,
                               mlp_dim=64, dropout_rate=0.0, max_len=16)
    model = nn.DecoderOnlyLM(cfg)

    def loss_fn(params, batch, _key):
        logits = model.apply({"params": params}, batch["tokens"][:, :-1])
        losses, weights = train.cross_entropy(logits, batch["tokens"][:, 1:],
                                              jnp.ones(logits.shape[:2]))
        return losses / weights, {"loss_sum": losses, "weight_sum": weights}

    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 17, size=(20, 16, 13)), jnp.int32)
    params = model.init(jax.random.key(0), tokens[0, :, :-1])["params"]
    optimizer = train.make_optimizer(3e-3, warmup_steps=2, total_steps=20)
    return loss_fn, optimizer, train.TrainState.create(params, optimizer), tokens


def losses_of(step, state, tokens, place=lambda b: b):
    out = []
    for i in range(len(tokens)):
        state, metrics = step(state, place({"tokens": tokens[i]}), jax.random.key(0))
        out.append(float(metrics["loss"]))
    return np.array(out), state


@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
def test_sharded_training_on_8_devices_matches_one_device(fsdp):
    loss_fn, optimizer, state, tokens = lm_setup()
    # The step donates its state, so each run starts from its own copy.
    single, _ = losses_of(train.make_train_step(loss_fn, optimizer),
                          jax.tree.map(jnp.copy, state), tokens)
    mesh = parallel.make_mesh(data=8)
    placed, step = parallel.sharded_train_step(loss_fn, optimizer, state, mesh, fsdp=fsdp)
    batch = parallel.batch_sharding(mesh)
    sharded, final = losses_of(step, placed, tokens, lambda b: jax.device_put(b, batch))
    np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=0)
    assert single[-1] < single[0]  # it trains
    kernel = final.params["decoder"]["layer_0"]["mlp"]["wi"]["kernel"]  # [32, 64]
    assert kernel.sharding.spec == (jax.sharding.PartitionSpec(None, "data") if fsdp
                                    else jax.sharding.PartitionSpec())


def test_make_mesh_checks_the_device_count():
    assert parallel.make_mesh(data=4, model=2).shape == {"data": 4, "model": 2}
    with pytest.raises(ValueError, match="needs more than the 8 devices"):
        parallel.make_mesh(data=8, model=2)
