"""Several processes, one program: JAX's own multi-controller runtime on this machine.

``python -m attnjax.parallel.launch -n 2 --local-devices 4 -- python -m MODULE ARGS`` starts
``n`` copies of the command with a localhost coordinator address, the process count and each
process's index in the environment (and ``--local-devices`` simulated CPU devices each). The
program calls ``attnjax.parallel.initialize()`` before it touches a device; that calls
``jax.distributed.initialize`` (CPU collectives over gloo) when those variables are set and
does nothing otherwise, so the same script runs as one process or many. After it,
``jax.devices()`` lists all processes' devices and a mesh over them is used exactly as in one
process (see ``attnjax.parallel.put`` for placing host data).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from collections.abc import Sequence

import jax

COORDINATOR, NUM_PROCESSES, PROCESS_ID = (
    "ATTNJAX_COORDINATOR", "ATTNJAX_NUM_PROCESSES", "ATTNJAX_PROCESS_ID")
LOCAL_DEVICES = "ATTNJAX_LOCAL_DEVICES"


def initialize() -> bool:
    """Join the process group described by the launcher's environment variables; ``False``
    (and nothing done) when they are absent. Call before any JAX computation."""
    if NUM_PROCESSES not in os.environ:
        return False
    if os.environ.get(LOCAL_DEVICES):
        jax.config.update("jax_num_cpu_devices", int(os.environ[LOCAL_DEVICES]))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ[COORDINATOR],
        num_processes=int(os.environ[NUM_PROCESSES]),
        process_id=int(os.environ[PROCESS_ID]),
        initialization_timeout=120,
    )
    return True


def simulated_cpu_env(devices: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) for a child process with ``devices`` simulated CPU
    devices: ``JAX_PLATFORMS=cpu`` (also on a machine with a GPU) and XLA_FLAGS's device
    count replaced."""
    env = dict(os.environ if env is None else env)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(command: Sequence[str], *, processes: int = 2, local_devices: int | None = 4,
           port: int | None = None, timeout: float | None = None) -> int:
    """Run ``command`` as ``processes`` cooperating processes; returns the first non-zero
    exit code (the others are then stopped) or 0. ``local_devices`` simulated CPU devices per
    process (``None``: leave the platform alone, e.g. one GPU each)."""
    if processes < 1:
        raise ValueError(f"launch: processes must be >= 1, got {processes}")
    address = f"localhost:{port or _free_port()}"
    children = []
    for index in range(processes):
        env = {**os.environ, COORDINATOR: address, NUM_PROCESSES: str(processes),
               PROCESS_ID: str(index)}
        if local_devices:
            env = {**simulated_cpu_env(local_devices, env), LOCAL_DEVICES: str(local_devices)}
        children.append(subprocess.Popen(list(command), env=env))
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    try:
        while any(c.poll() is None for c in children):
            failed = [c.returncode for c in children if c.returncode not in (None, 0)]
            if failed or (deadline is not None and time.monotonic() > deadline):
                code = failed[0] if failed else 124
                break
            time.sleep(0.05)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.wait()
    return code or next((c.returncode for c in children if c.returncode), 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnjax.parallel.launch",
        description="Run a command as N JAX processes on this machine (localhost coordinator).",
        epilog="example: python -m attnjax.parallel.launch -n 2 --local-devices 4 -- "
               "python -m attnjax.parallel.check --data 8")
    parser.add_argument("-n", "--processes", type=int, default=2)
    parser.add_argument("--local-devices", type=int, default=4,
                        help="simulated CPU devices per process (0: leave the platform alone)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    return launch(command, processes=args.processes, local_devices=args.local_devices or None,
                  port=args.port, timeout=args.timeout)
