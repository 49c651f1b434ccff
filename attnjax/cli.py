"""The ``attnjax`` command: run the experiments of a repository checkout, or cost attention.

    attnjax list                 the registered experiments and the claims they test
    attnjax run NAME [ARGS...]   python -m experiments.NAME ARGS...
    attnjax tour [ARGS...]       python -m experiments.tour ARGS...  (--smoke, --workdir DIR)
    attnjax cost --seq-len T --heads H --head-dim D [--layers L] [--batch B] [--causal]
                 [--dtype float32|bfloat16|float16] [--backward] [--d-model N] [--json]
                                 pairs, FLOPs and memory of attention (attnjax.cost; -h: all)

``experiments/`` sits next to the ``attnjax`` package in the checkout and is not part of
the installed package, so ``list``, ``run`` and ``tour`` only work for an editable install
(``pip install -e .``); ``cost`` is arithmetic and works from any install.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from attnjax.experiment import REPO_ROOT

USAGE = __doc__.split("\n\n")[1]


def _use_checkout(repo_root: Path = REPO_ROOT):
    """Puts ``repo_root`` on ``sys.path`` and returns the ``experiments`` package.

    Raises:
      SystemExit: with instructions, when ``repo_root`` has no ``experiments/`` package
        (the package was installed from a wheel rather than from a checkout).
    """
    if not (repo_root / "experiments" / "__init__.py").is_file():
        raise SystemExit(
            f"attnjax: no experiments/ folder next to the attnjax package (looked in "
            f"{repo_root}). The experiments live in the git checkout, not in the installed "
            "package: clone the repository and install it with `pip install -e .` from the "
            "checkout, or run `python -m experiments.tour` there."
        )
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    return importlib.import_module("experiments")


def _list(registry) -> int:
    width = max(map(len, registry))
    for name, spec in registry.items():
        print(f"{name:<{width}}  {spec.claim}")
    return 0


def _run(registry, name: str, argv: Sequence[str]) -> int:
    from attnjax import experiment

    if name not in registry:
        raise SystemExit(
            f"attnjax run: unknown experiment {name!r}; registered: {', '.join(registry)}"
        )
    module = importlib.import_module(registry[name].module)
    experiment.main(name, module.run, argv)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnjax`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"usage:\n{USAGE}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "cost":  # before _use_checkout: needs no experiments/
        from attnjax import cost

        return cost.main(rest)
    if command not in ("list", "run", "tour"):
        print(f"attnjax: unknown command {command!r}\nusage:\n{USAGE}", file=sys.stderr)
        return 2
    experiments = _use_checkout()
    if command == "list":
        return _list(experiments.REGISTRY)
    if command == "tour":
        from experiments import tour

        return tour.main(rest)
    if not rest or rest[0].startswith("-"):
        print(
            "usage: attnjax run NAME [--config SPEC] [--config.FIELD=VALUE ...] "
            f"[--workdir DIR]\nregistered: {', '.join(experiments.REGISTRY)}",
            file=sys.stderr,
        )
        return 2
    return _run(experiments.REGISTRY, rest[0], rest[1:])


if __name__ == "__main__":
    sys.exit(main())
