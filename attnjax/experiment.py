"""Shared experiment plumbing: config files, run directories, the results contract, the
verdict helpers and the script entry point.

An experiment is a module with a ``run(config, run_dir) -> results`` function (``measure``
then ``verdict``, see ``experiments/__init__.py``) and a config file ``configs/<name>.py``
whose ``get_config(arg=None)`` returns an ``ml_collections.ConfigDict`` (``arg`` picks a
variant, e.g. ``"smoke"``). This module turns that into a command line::

    python -m experiments.NAME [--config configs/NAME.py[:variant]] [--config.FIELD=VALUE ...]
                               [--workdir DIR]

and writes ``runs/NAME/<YYYYmmdd-HHMMSS>/`` with ``config.json`` (the resolved config),
``metrics.jsonl`` (one JSON object per line, appended across resumes), ``results.json`` (the
numbers plus ``claim``, ``rule``, ``measured``, ``verdict``, ``seeds`` and ``metrics``; see
``check_results``) and the figures the run declares. Rerunning the same command resumes an
unfinished run of the same config (``RunDir.create``); Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import difflib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

# The repository checkout: the parent of the ``attnjax`` package directory. Config paths
# are looked up here when they are not found relative to the working directory, so that
# ``attnjax run NAME`` works from any directory of an editable install.
REPO_ROOT = Path(__file__).resolve().parents[1]

# Every results.json verdict starts with one of these, so that a report can sort and
# colour verdicts without parsing prose.
VERDICTS = ("claim holds", "claim does not hold", "mixed")

RunFn = Callable[[ml_collections.ConfigDict, "RunDir"], dict]


class Skipped(Exception):
    """Raised by an experiment that cannot run here (e.g. an optional model package is not
    installed); the message says why and how to fix it. The tour reports it as skipped."""


# --------------------------------------------------------------------------- configs


def default_config_spec(name: str) -> str:
    """The config file of experiment ``name``: ``configs/<name>.py``."""
    return f"configs/{name}.py"


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``"path/to/config.py:variant"`` -> ``("path/to/config.py", "variant")``."""
    path, sep, variant = spec.rpartition(":")
    # Only a suffix after a ".py" path or a dotted module name (``configs.translation``)
    # is a variant, so a path that itself contains a colon still resolves.
    if sep and (path.endswith(".py") or ("/" not in path and path.replace(".", "").isidentifier())):
        return path, variant or None
    return spec, None


def _resolve_config_path(path: str) -> Path:
    candidate = Path(path).expanduser()
    tried = [candidate] if candidate.is_absolute() else [Path.cwd() / candidate, REPO_ROOT / path]
    # A dotted module name (``configs.translation``) names the same file.
    if not path.endswith(".py") and "/" not in path:
        dotted = Path(*path.split(".")).with_suffix(".py")
        tried += [Path.cwd() / dotted, REPO_ROOT / dotted]
    for location in tried:
        if location.is_file():
            return location.resolve()
    raise FileNotFoundError(
        f"config file {path!r} not found; looked in: {', '.join(str(p) for p in tried)}"
    )


def _import_file(path: Path):
    # Loaded by path and not registered in sys.modules: a config file is a script that
    # builds a ConfigDict, not a module other code imports. Its folder's parent goes on
    # sys.path so that it can import its shared blocks (``from configs import common``).
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    module_spec = importlib.util.spec_from_file_location(f"_attnjax_config_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import config file {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def describe_config(spec: str) -> str:
    """The variants (``VARIANTS`` of the config file) and every field of the default
    config with its value and type: what ``--help`` prints."""
    path, _ = _split_spec(spec)
    module = _import_file(_resolve_config_path(path))
    config = module.get_config()
    variants = getattr(module, "VARIANTS", ())
    doc = (module.__doc__ or "").strip()
    lines = [doc, ""] if doc else []
    if variants:
        lines.append(f"variants ({path}:VARIANT): {', '.join(variants)}")
    lines.append("fields (--config.FIELD=VALUE; default variant):")
    for name, value in iter_fields(config):
        lines.append(f"  {name} = {value!r}")
    return "\n".join(lines)


def iter_fields(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields ``(dotted_name, value)`` for every leaf field of ``config``, depth first."""
    for name in config.keys():
        value = config[name]
        if isinstance(value, ml_collections.ConfigDict):
            yield from iter_fields(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def format_config(config: ml_collections.ConfigDict, indent: str = "  ") -> str:
    """One ``name = value`` line per leaf field, in the syntax of ``--config.name=value``."""
    return "\n".join(f"{indent}{name} = {value!r}" for name, value in iter_fields(config))


def _unknown_field(config: ml_collections.ConfigDict, name: str) -> ValueError:
    valid = [field for field, _ in iter_fields(config)]
    hint = difflib.get_close_matches(name, valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ValueError(
        f"unknown config field {name!r}{did_you_mean}; valid fields: {', '.join(valid)}"
    )


_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _parse_scalar(name: str, raw: str, field_type: type) -> Any:
    """Parses ``raw`` as ``field_type`` (bool, int, float or str)."""
    # Bools get their own spellings: bool("false") is True.
    if field_type is bool:
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ValueError(f"--config.{name}={raw!r}: expected a bool (true/false/1/0)")
    if field_type is str:
        return raw
    try:
        return field_type(raw)
    except ValueError:
        raise ValueError(
            f"--config.{name}={raw!r}: expected {field_type.__name__}, the type of the field"
        ) from None


def _parse_sequence(name: str, raw: str, current: Sequence) -> tuple | list:
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(
            f"--config.{name}={raw!r}: expected a Python literal sequence such as "
            f"{tuple(current) or (1, 2)!r} (the field is a {type(current).__name__})"
        ) from None
    if not isinstance(parsed, tuple | list):
        parsed = (parsed,)  # "--config.d_ks=64" means the one-element sweep (64,)
    # A homogeneous sequence keeps its element type, so "--config.d_ks=(4.5,)" is refused
    # instead of sweeping a fractional head dim.
    element_types = {type(x) for x in current}
    if len(element_types) == 1:
        (element_type,) = element_types
        if element_type in (bool, int, float, str):
            parsed = [_check_element(name, x, element_type) for x in parsed]
    return type(current)(parsed)


def _check_element(name: str, x: Any, element_type: type) -> Any:
    if element_type is float and type(x) is int:
        return float(x)
    if type(x) is not element_type:
        raise ValueError(
            f"--config.{name}: element {x!r} is a {type(x).__name__}, expected "
            f"{element_type.__name__} like the current elements"
        )
    return x


def parse_override(config: ml_collections.ConfigDict, override: str) -> tuple[str, Any]:
    """Parses ``--config.a.b=value`` against ``config``; returns ``("a.b", parsed_value)``.

    The value is parsed with the type of the existing field: bools accept true/false/1/0,
    ints and floats their Python spelling, strings are taken verbatim, tuples and lists
    are Python literals (``ast.literal_eval``). Fields whose value is None are parsed as a
    Python literal when possible and kept as a string otherwise.

    Raises:
      ValueError: for a malformed override, an unknown field (the message lists the valid
        fields) or a value that does not parse as the field's type.
    """
    prefix = "--config."
    if not override.startswith(prefix) or "=" not in override:
        raise ValueError(f"config override {override!r} must look like --config.FIELD=VALUE")
    name, _, raw = override[len(prefix) :].partition("=")
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise _unknown_field(config, name)
        node = node[part]
    if leaf not in node:
        raise _unknown_field(config, name)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        fields = ", ".join(f"{name}.{field}" for field, _ in iter_fields(current))
        raise ValueError(f"--config.{name} is a group of fields; override one of: {fields}")
    field_type = node.get_type(leaf)  # also knows the type of a None placeholder
    if isinstance(current, tuple | list):
        return name, _parse_sequence(name, raw, current)
    if field_type in (bool, int, float, str):
        return name, _parse_scalar(name, raw, field_type)
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies ``--config.a.b=value`` overrides to ``config`` in place; returns it."""
    for override in overrides:
        name, value = parse_override(config, override)
        *parents, leaf = name.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:variant]`` and applies ``--config.a.b=value`` overrides.

    Args:
      spec: a config file path, relative to the working directory or to the repository
        root, optionally followed by ``:variant``, which is passed to the file's
        ``get_config(arg)`` (no variant calls ``get_config()``).
      overrides: strings ``--config.a.b=value``; see ``parse_override``.

    Returns:
      The resolved ``ConfigDict``, locked so that a typo in experiment code that sets a
      new field fails instead of silently adding it.
    """
    path, variant = _split_spec(spec)
    module = _import_file(_resolve_config_path(path))
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} defines no get_config(arg=None)")
    config = module.get_config() if variant is None else module.get_config(variant)
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            f"{path}: get_config must return an ml_collections.ConfigDict, "
            f"got {type(config).__name__}"
        )
    apply_overrides(config, overrides)
    config.lock()
    return config


# --------------------------------------------------------------------------- run dirs


def to_json(obj: Any) -> Any:
    """Converts configs, NumPy/JAX arrays and scalars, tuples and paths to plain JSON.

    Non-finite floats become ``None``, so the files stay strict JSON that any reader
    (``jq``, a browser) accepts.
    """
    if isinstance(obj, ml_collections.ConfigDict):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, str | bytes):
        array = np.asarray(obj)
        return to_json(array.tolist()) if array.ndim else to_json(array.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(to_json(obj), indent=2, allow_nan=False) + "\n")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The output folder of one run.

    Attributes:
      path: the folder; it holds ``config.json``, ``metrics.jsonl``, ``results.json`` and
        figures.
    """

    path: Path

    @classmethod
    def create(
        cls,
        experiment: str,
        workdir: str | Path | None = None,
        root: str | Path = "runs",
        *,
        config: ml_collections.ConfigDict | Mapping | None = None,
    ) -> RunDir:
        """The run folder: ``workdir`` if given, else an unfinished run of the same config
        (so that rerunning the command resumes it), else a fresh
        ``<root>/<experiment>/<YYYYmmdd-HHMMSS>[-n]/``.

        An existing folder keeps its ``metrics.jsonl``: a resumed trainer drops only the
        records after the step it restored (``drop_records``), so the history survives a
        restart. An unfinished run is the newest folder under ``<root>/<experiment>`` whose
        ``config.json`` equals ``config`` and that has no ``results.json``. A fresh
        timestamped folder is never shared: if two runs start in the same second the second
        gets a ``-1`` suffix (``mkdir`` without ``exist_ok`` is the atomic test).
        """
        if workdir is not None:
            path = Path(workdir)
            path.mkdir(parents=True, exist_ok=True)
            return cls(path)
        parent = Path(root) / experiment
        parent.mkdir(parents=True, exist_ok=True)
        if config is not None:
            unfinished = cls.find_unfinished(parent, config)
            if unfinished is not None:
                return unfinished
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise FileExistsError(f"could not create a fresh run folder for {stamp} in {parent}")

    @classmethod
    def find_unfinished(cls, parent: Path, config) -> RunDir | None:
        """The newest run folder in ``parent`` with this config and no results, if any."""
        wanted = to_json(config)
        for path in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
            run = cls(path)
            if run.results_path.exists() or not run.config_path.exists():
                continue
            try:
                if json.loads(run.config_path.read_text()) == wanted:
                    return run
            except (OSError, json.JSONDecodeError):
                continue
        return None

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def figure_path(self, name: str, suffix: str = ".png") -> Path:
        """Where to save figure ``name`` (``<run>/<name>.png``)."""
        return self.path / f"{name}{suffix}"

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        _write_json(self.config_path, config)

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Appends one JSON object as a line of ``metrics.jsonl``."""
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(to_json(metrics), allow_nan=False) + "\n")

    def records(self) -> list[dict]:
        """Every record of ``metrics.jsonl`` (a torn last line, from a kill mid-write, is
        skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def drop_records(self, where: Callable[[dict], bool]) -> int:
        """Rewrites ``metrics.jsonl`` without the records for which ``where`` is true
        (atomically: a temporary file replaces it); returns how many were dropped."""
        records = self.records()
        kept = [r for r in records if not where(r)]
        if len(kept) == len(records) and self.metrics_path.exists():
            return 0
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        os.replace(tmp, self.metrics_path)
        return len(records) - len(kept)

    def write_results(self, results: Mapping[str, Any]) -> None:
        _write_json(self.results_path, results)


# --------------------------------------------------------------------------- running


def verdict_class(verdict: str) -> str:
    """The class a verdict text starts with: one of ``VERDICTS``."""
    for cls in VERDICTS:
        if str(verdict).startswith(cls):
            return cls
    raise ValueError(f"verdict must start with one of {VERDICTS}, got {verdict!r}")


def seed_verdict(passes: Sequence[bool], *, holds_at: float = 0.8,
                 fails_at: float = 0.2) -> tuple[str, str]:
    """Combines a per-seed test into a verdict class and ``"k of n seeds"``.

    The claim holds if the per-seed test passes in at least ``ceil(holds_at * n)`` seeds,
    does not hold if it passes in at most ``floor(fails_at * n)``, and is mixed in between
    (5 seeds, defaults: holds with 4-5, does not hold with 0-1; 3 seeds: 3 and 0; 2: 2 and
    0). These two fractions belong to the pre-registered rule: experiments read them from
    their config.
    """
    passes = [bool(x) for x in passes]
    if not passes:
        raise ValueError("`passes` is empty: a verdict needs at least one seed")
    if not 0.0 <= fails_at < holds_at <= 1.0:
        raise ValueError(f"need 0 <= fails_at < holds_at <= 1, got {fails_at}, {holds_at}")
    k, n = sum(passes), len(passes)
    if k >= math.ceil(holds_at * n - 1e-9):
        cls = "claim holds"
    elif k <= math.floor(fails_at * n + 1e-9):
        cls = "claim does not hold here"
    else:
        cls = "mixed"
    return cls, f"{k} of {n} seeds"


def combine_verdicts(parts: Mapping[str, str]) -> str:
    """One class from several part verdicts: holds if every part holds, does not hold if
    every part does not, mixed otherwise."""
    classes = {verdict_class(v) for v in parts.values()}
    if not classes:
        raise ValueError("`parts` is empty")
    if classes == {"claim holds"}:
        return "claim holds"
    if classes == {"claim does not hold"}:
        return "claim does not hold here"
    return "mixed"


def check_results(name: str, results: Mapping[str, Any], run_dir: RunDir) -> None:
    """Checks the results contract every experiment shares (``shared/docs/protocol.md``).

    Raises:
      ValueError: a missing ``claim``/``rule``/``measured``/``verdict``, a verdict that does
        not start with one of ``VERDICTS``, ``seeds`` that is not a list, a metric without
        ``mean`` and ``ci95`` (or, for trained experiments, without one ``per_seed`` value
        per seed), or a listed figure that was not written.
    """
    missing = [key for key in ("claim", "rule", "measured", "verdict") if not results.get(key)]
    if missing:
        raise ValueError(f"experiment {name!r}: results lack {', '.join(missing)}")
    if not str(results["verdict"]).startswith(VERDICTS):
        raise ValueError(
            f"experiment {name!r}: verdict must start with one of {VERDICTS}, "
            f"got {results['verdict']!r}"
        )
    seeds = results.get("seeds")
    if not isinstance(seeds, list | tuple):
        raise ValueError(f"experiment {name!r}: results need 'seeds', a list ([] if untrained)")
    metrics = results.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"experiment {name!r}: results need 'metrics', one record per "
                         "headline number ({'per_seed': [...], 'mean': x, 'ci95': [lo, hi]})")
    for key, metric in metrics.items():
        if not isinstance(metric, Mapping) or "mean" not in metric or "ci95" not in metric:
            raise ValueError(f"experiment {name!r}: metric {key!r} needs 'mean' and 'ci95'")
        if seeds and len(metric.get("per_seed", ())) != len(seeds):
            raise ValueError(
                f"experiment {name!r}: metric {key!r} has "
                f"{len(metric.get('per_seed', ()))} per_seed values for {len(seeds)} seeds"
            )
    for figure in [*results.get("figures", ()), *results.get("pages", ())]:
        if not (run_dir.path / figure).is_file():
            raise ValueError(f"experiment {name!r}: listed figure {figure!r} was not written")


def run_experiment(
    name: str, run_fn: RunFn, config: ml_collections.ConfigDict, run_dir: RunDir
) -> dict:
    """Writes ``config.json``, calls ``run_fn(config, run_dir)``, checks and writes results.

    Returns:
      ``{"experiment": name, **results}``, as written to ``results.json``.
    """
    run_dir.write_config(config)
    results = {"experiment": name, **run_fn(config, run_dir)}
    check_results(name, results, run_dir)
    run_dir.write_results(results)
    return results


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.x=y`` (or ``--config.x y``) from the other arguments."""
    overrides, rest = [], []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--config."):
            if "=" not in arg:
                value = next(args, None)
                if value is None:
                    raise SystemExit(f"error: {arg} needs a value (--config.FIELD=VALUE)")
                arg = f"{arg}={value}"
            overrides.append(arg)
        else:
            rest.append(arg)
    return overrides, rest


def main(name: str, run_fn: RunFn, argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point of experiment ``name``; returns its results.

    Parses ``--config SPEC`` (default ``configs/<name>.py``), ``--config.FIELD=VALUE``
    overrides and ``--workdir DIR`` (default ``runs/<name>/<time>/``), prints the resolved
    config, runs ``run_fn(config, run_dir)`` and prints the verdict and the output folder.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides, rest = _split_overrides(argv)
    config_spec = default_config_spec(name)
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            config_spec = rest[i + 1]
        elif arg.startswith("--config="):
            config_spec = arg.partition("=")[2]
    try:
        epilog = describe_config(config_spec)
    except Exception as e:  # --help must still print when the config is broken
        epilog = f"(config {config_spec} could not be read: {e})"
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=f"Run the {name} experiment. Override any config field with "
        "--config.FIELD=VALUE (nested: --config.a.b=VALUE). Rerunning the same command "
        "resumes an unfinished run of the same config.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=default_config_spec(name),
        metavar="SPEC",
        help="config file or module, optionally with :variant (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help=f"output folder (default: an unfinished run of this config, else runs/{name}/<time>)",
    )
    args = parser.parse_args(rest)
    try:
        config = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    run_dir = RunDir.create(name, args.workdir, config=config)
    print(f"{name}: config {args.config}" + (f" {' '.join(overrides)}" if overrides else ""))
    print(format_config(config))
    print(f"run folder: {run_dir.path}/")
    try:
        results = run_experiment(name, run_fn, config, run_dir)
    except Skipped as e:
        raise SystemExit(f"{name}: skipped: {e}") from None
    except KeyboardInterrupt as e:
        step = getattr(e, "step", None)
        where = f" at step {step}" if step is not None else ""
        print(f"\n{name}: stopped{where}; rerun the same command to resume "
              f"({run_dir.path}/)", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"measured: {results['measured']}")
    print(f"verdict: {results['verdict']}")
    print(f"results written to {run_dir.path}/")
    return results
