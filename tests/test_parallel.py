"""Training on several devices equals training on one (``attnjax.parallel``).

The same global batches on 8 virtual CPU devices, in one process or two, give the loss curve
of one device within 1e-5 per step over 20 steps: data parallel, FSDP, tensor-parallel heads,
their combinations and the classic pmap step. The problem is ``attnjax.parallel.check``'s
tiny GELU LM (its docstring says why not ReLU).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from attnjax import parallel, train
from attnjax.parallel import check

from .conftest import REPO_ROOT

STEPS = 20


@pytest.fixture(scope="module")
def reference():
    curve = np.array(check.loss_curve({}, num_steps=STEPS))
    assert curve[-1] < curve[0] - 0.5  # it trains
    return curve


@pytest.mark.parametrize("layout", [
    dict(data=8), dict(data=8, fsdp=True), dict(data=2, model=4), dict(data=4, model=2, fsdp=True),
    dict(pmap=True),
], ids=["data-parallel", "fsdp", "tensor-parallel", "fsdp+tensor-parallel", "pmap"])
def test_8_devices_give_the_loss_curve_of_one(layout, reference):
    curve = np.array(check.loss_curve(layout, num_steps=STEPS))
    np.testing.assert_allclose(curve, reference, atol=1e-5, rtol=0)


def test_shardings_follow_the_layout():
    _, optimizer, state, _ = check.lm_problem()
    spec = lambda mesh, fsdp, *path: parallel.state_shardings(  # noqa: E731
        state, mesh, fsdp=fsdp).params["decoder"]["layer_0"][path[0]][path[1]]["kernel"].spec
    dp, tp = parallel.make_mesh(8), parallel.make_mesh(2, 4)
    assert spec(dp, False, "mlp", "wi") == P()
    assert spec(dp, True, "mlp", "wi") == P(None, "data")  # [32, 64]: the larger axis
    assert spec(tp, False, "self_attention", "query") == P(None, "model", None)  # [D, H, Dh]
    assert spec(tp, False, "self_attention", "out") == P("model", None, None)  # [H, Dh, D]
    assert spec(tp, True, "mlp", "wi") == P("data", "model")
    assert spec(tp, True, "mlp", "wo") == P("model", "data")
    # Adam's moments are sharded like their parameters.
    moments = parallel.state_shardings(state, tp, fsdp=True).opt_state
    assert P("data", "model") in {s.spec for s in jax.tree.leaves(moments)}


def test_tensor_parallel_step_splits_the_heads_and_all_reduces():
    loss_fn, optimizer, state, arrays = check.lm_problem()
    mesh = parallel.make_mesh(data=1, model=4)
    placed, step = parallel.sharded_train_step(loss_fn, optimizer, state, mesh)
    query = placed.params["decoder"]["layer_0"]["self_attention"]["query"]["kernel"]
    assert {s.data.shape for s in query.addressable_shards} == {(32, 1, 8)}  # 4 heads / 4
    hlo = jax.jit(lambda p, b: jax.grad(lambda p: loss_fn(p, b, None)[0])(p),
                  in_shardings=(parallel.state_shardings(state.params, mesh), None)).lower(
        placed.params, {"tokens": arrays["tokens"][:8]}).compile().as_text()
    assert "all-reduce" in hlo


def test_sharded_training_resumes_from_a_checkpoint(tmp_path, reference):
    loss_fn, optimizer, state, arrays = check.lm_problem(num_steps=STEPS)
    batch_at = train.make_batch_fn(arrays, 16, 0)
    layout = {"data": 4, "model": 2, "fsdp": True}
    placed, step = parallel.train_step_for(layout, loss_fn, optimizer,
                                           jax.tree.map(jnp.copy, state))
    shardings = jax.tree.map(lambda x: x.sharding, placed)
    losses = []
    for stop in (8, STEPS):  # a run that stops at step 8, then a restart that resumes
        if stop == STEPS:  # the restart: a fresh initial state (the first one was donated)
            placed = parallel.put(state, shardings)
        final, records = train.fit(
            placed, step, batch_at, num_steps=stop, base_key=jax.random.key(0), log_every=1,
            checkpointer=train.Checkpointer(tmp_path, every=4), progress=False)
        losses += [r["loss"] for r in records if r["split"] == "train"]
    np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0)
    kernel = final.params["decoder"]["layer_0"]["mlp"]["wi"]["kernel"]
    assert kernel.sharding.spec == P("data", "model")  # restored onto the mesh


def test_pmap_step_combines_unequal_weights_exactly():
    """Devices with different numbers of real tokens: the global weighted mean, not the
    mean of the devices' means."""

    def loss_fn(params, batch, _key):
        err = (batch["x"] * params["w"] - batch["y"]) ** 2 * batch["m"]
        return err.sum() / batch["m"].sum(), {"loss_sum": err.sum(), "weight_sum": batch["m"].sum()}

    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 5)), "y": rng.normal(size=(8, 5)),
             "m": (rng.random((8, 5)) < np.linspace(0.2, 1, 8)[:, None]).astype(np.float32)}
    batch["m"][:, 0] = 1.0
    batch = jax.tree.map(lambda x: x.astype(np.float32), batch)
    optimizer = train.make_optimizer(0.1, warmup_steps=1, total_steps=10, schedule="constant")
    state = train.TrainState.create({"w": jnp.ones(5)}, optimizer)
    single, metrics = train.make_train_step(loss_fn, optimizer)(
        jax.tree.map(jnp.copy, state), batch, jax.random.key(0))  # donates its copy
    step = parallel.pmap_train_step(loss_fn, optimizer)
    replicated, pmetrics = step(parallel.replicate(state), parallel.shard_batch(batch),
                                jax.random.key(0))
    np.testing.assert_allclose(pmetrics["loss"][0], metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(parallel.unreplicate(replicated).params["w"], single.params["w"],
                               rtol=1e-6)


def test_two_processes_of_4_devices_give_the_loss_curve_of_one(tmp_path, reference):
    """``python -m attnjax.parallel.launch -n 2 --local-devices 4 -- python -m
    attnjax.parallel.check --data 4 --model 2 --fsdp``: jax.distributed on localhost. The
    run stops at step 8 (as a crash would) and a second launch resumes from the orbax
    checkpoint both processes wrote; together they give the one-device curve."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    losses = []
    for stop in (8, STEPS):
        out = tmp_path / f"curve_{stop}.json"
        subprocess.run(
            [sys.executable, "-m", "attnjax.parallel.launch", "-n", "2", "--local-devices", "4",
             "--timeout", "100", "--", sys.executable, "-m", "attnjax.parallel.check",
             "--data", "4", "--model", "2", "--fsdp", "--steps", str(STEPS), "--stop-at",
             str(stop), "--checkpoint-dir", str(tmp_path / "checkpoints"), "--out", str(out)],
            cwd=REPO_ROOT, env=env, check=True, timeout=120, capture_output=True)
        result = json.loads(out.read_text())
        assert (result["processes"], result["devices"], result["local_devices"]) == (2, 8, 4)
        losses += result["losses"]
    np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0)


def test_launch_reports_a_failing_process():
    code = parallel.launch([sys.executable, "-c", "import os, sys; "
                            "sys.exit(3 if os.environ['ATTNJAX_PROCESS_ID'] == '1' else 0)"],
                           processes=2, local_devices=None)
    assert code == 3


def test_bad_layouts_are_refused_with_the_reason():
    loss_fn, optimizer, state, _ = check.lm_problem()
    with pytest.raises(ValueError, match="needs more than the 8 devices"):
        parallel.make_mesh(data=8, model=2)
    _, step = parallel.sharded_train_step(loss_fn, optimizer, state, parallel.make_mesh(8))
    with pytest.raises(ValueError, match="batch of \\[12\\] rows does not split over the 8"):
        step(state, {"tokens": np.ones((12, 17), np.int32)}, jax.random.key(0))
    with pytest.raises(ValueError, match="does not split over 8 devices"):
        parallel.shard_batch({"x": np.ones((12, 3))})


def test_scale_out_smoke_measures_memory_communication_and_curves(tour_smoke):
    tour_dir, _ = tour_smoke
    results = json.loads((tour_dir / "scale_out" / "results.json").read_text())
    assert results["verdict"].startswith(("claim holds", "claim does not hold", "mixed"))
    rows = {(r["method"], r["devices"], r["length"]): r for r in results["attention"]}
    # Sharded inputs: each ring device's arguments are 1/n of one device's.
    one, eight = rows["chunked", 1, 256], rows["ring", 8, 256]
    assert eight["argument_bytes"] * 8 == one["argument_bytes"]
    assert eight["total_bytes"] < rows["ring", 2, 256]["total_bytes"] < rows["xla", 1, 256][
        "total_bytes"]
    # Forward 2(n-1) key/value blocks, backward 2(n-1) blocks and 2n gradient blocks.
    block = 256 // 8 * 2 * 16 * 4
    assert eight["collectives"]["collective-permute"]["sent_bytes"] == (4 * 7 + 2 * 8) * block
    assert all(e["output_error"] < 2e-5 and e["gradient_error"] < 2e-5
               for e in results["ring_errors"])
    assert results["layouts"][1]["layout"] == "data=8"  # the LM step's memory and bytes
    assert 0 < results["layouts"][1]["total_bytes"] < results["layouts"][0]["total_bytes"]
    assert (tour_dir / "scale_out" / "scale_out_attention.png").read_bytes()[:4] == b"\x89PNG"
