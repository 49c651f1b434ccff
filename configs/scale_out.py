"""Config of experiments/scale_out.py: attention and training beyond one device.

Variants (``configs/scale_out.py:VARIANT``):
  full (default)  T = 1024 ... 65536 on 2, 4 and 8 simulated CPU devices; every training
                  layout over 20 steps, and 2 processes x 4 devices.
  tour            T = 1024, 4096, 16384, 65536; ring checked causal only; two training
                  layouts over 10 steps (no 2-process run); two layouts' LM step costs.
  smoke           two short lengths, no training curves (tests/test_parallel.py has them).

Compiled-program measurements without seeds (``seeds = ()``). The pre-registered rule is
``experiments.scale_out.RULE`` with ``verdict.*``, ``tolerance`` and ``curve_tolerance``.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/scale_out.py", arg, VARIANTS)
    c = common.base(variant)
    c.seeds = ()  # deterministic programs: nothing to vary
    c.seed = 0
    # Simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count); when this
    # process has fewer, the measurements run in a child process that has them.
    c.devices = 8
    # Attention, B=1, fp32: per-device memory and communication of forward+backward, read
    # from the compiled programs (nothing this large is run).
    c.batch = 1
    c.heads = 8
    c.head_dim = 64
    c.lengths = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
    c.ring_devices = (2, 4, 8)
    c.causal = False
    # Ring attention is also run and compared with one device at this length.
    c.check_length = 1024
    c.check_causal = (False, True)
    c.tolerance = 2e-5
    # Training: attnjax.parallel.check's tiny LM, loss curves per layout vs one device.
    c.train_steps = 20
    c.layouts = ("data=8", "data=8,fsdp", "data=2,model=4", "data=4,model=2,fsdp", "pmap")
    c.multiprocess = "data=4,model=2,fsdp"  # launched as 2 processes x 4 devices; "" = skip
    # Layouts whose mid-size LM step is compiled and read (below; one device is always read).
    c.cost_layouts = ("data=8", "data=8,fsdp", "data=2,model=4", "data=4,model=2,fsdp")
    c.curve_tolerance = 1e-5
    # The rule's thresholds (experiments.scale_out.RULE): memory per device ~ n^p with
    # p <= max_memory_slope (1/n would be -1); bytes sent ~ T^q with q < max_comm_slope.
    c.verdict.max_memory_slope = -0.8
    c.verdict.max_comm_slope = 1.5
    # A mid-size LM whose training step's per-device memory and communication are read per
    # layout (compiled, not run).
    c.lm = ml_collections.ConfigDict(
        {"model_dim": 512, "num_heads": 8, "num_layers": 4, "mlp_dim": 2048, "vocab_size": 8192,
         "length": 256, "batch_size": 32})
    if variant == "tour":
        c.lengths = (1024, 4096, 16384, 65536)
        c.train_steps = 10
        c.check_causal = (True,)
        c.layouts = ("data=8", "data=4,model=2,fsdp")
        c.multiprocess = ""  # the full variant launches 2 processes x 4 devices
        c.cost_layouts = ("data=8", "data=4,model=2,fsdp")
    elif variant == "smoke":
        c.heads = 2
        c.head_dim = 16
        c.lengths = (128, 256)
        c.ring_devices = (2, 8)
        c.check_length = 128
        c.check_causal = (True,)
        c.train_steps = 2
        c.layouts = ()  # the curves are tests/test_parallel.py's
        c.cost_layouts = ("data=8",)
        c.multiprocess = ""
        c.lm = ml_collections.ConfigDict(
            {"model_dim": 32, "num_heads": 4, "num_layers": 1, "mlp_dim": 64, "vocab_size": 64,
             "length": 16, "batch_size": 16})
    return c
