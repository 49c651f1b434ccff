"""The tour: run every registered experiment and write one report of claims and verdicts.

    python -m experiments.tour [--smoke] [--workdir DIR]      (or: attnjax tour ...)

Each experiment runs in its tour variant (``--smoke``: its smoke variant) into
``runs/tour/<time>/<name>/``, and ``runs/tour/<time>/REPORT.md`` gets one table row per
claim (claim, experiment, measured result, verdict, figures), with the environment it ran
in. ``results.json`` beside it holds the same rows for scripts. An experiment that cannot
run here (``attnjax.experiment.Skipped``: an optional model package is missing) gets a
"skipped" row saying why. An experiment that crashes
gets an error row and its traceback in the report, the others still run, and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence

import jax
from tqdm import tqdm

import attnjax
from attnjax import experiment
from experiments import REGISTRY, Experiment


def environment() -> dict[str, str]:
    """Versions and hardware the tour ran on, as ``{label: text}``."""
    import flax
    import jaxlib

    devices = Counter(
        d.platform if d.device_kind == d.platform else f"{d.platform} ({d.device_kind})"
        for d in jax.devices()
    )
    return {
        "attnjax": f"{attnjax.__version__} ({_git_revision()})",
        "python": platform.python_version(),
        "jax / jaxlib": f"{jax.__version__} / {jaxlib.__version__}",
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "devices": ", ".join(f"{n} x {kind}" for kind, n in devices.items()),
        "platform": platform.platform(),
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=experiment.REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def _git_revision() -> str:
    """``git <short hash>[, with local changes]``: which code produced the numbers."""
    try:
        revision = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"git {revision}" + (", with local changes" if dirty else "")


def run_one(spec: Experiment, variant: str, run_dir: experiment.RunDir) -> dict:
    """Runs one experiment; returns its report row (``status`` "ok", "skipped" or "error")."""
    row = {"name": spec.name, "claim": spec.claim, "variant": variant, "dir": spec.name}
    start = time.perf_counter()
    try:
        module = importlib.import_module(spec.module)
        config = experiment.load_config(f"{spec.config}:{variant}")
        results = experiment.run_experiment(spec.name, module.run, config, run_dir)
    except experiment.Skipped as e:
        row.update(status="skipped", measured="", verdict=f"skipped: {e}", figures=[])
    except Exception:  # one crashing experiment must not stop the tour
        error = traceback.format_exc()
        (run_dir.path / "error.txt").write_text(error)
        row.update(status="error", error=error, measured="", verdict="crashed", figures=[])
    else:
        headline = list(results.get("headline") or list(results["metrics"])[:1])
        row.update(
            status="ok",
            measured=results["measured"],
            verdict=results["verdict"],
            rule=results["rule"],
            seeds=list(results["seeds"]),
            headline={k: results["metrics"][k] for k in headline if k in results["metrics"]},
            published=list(results.get("published") or []),
            figures=list(results.get("figures", [])),
            pages=list(results.get("pages", [])),  # interactive HTML, linked from the report
        )
    row["wall_time_s"] = round(time.perf_counter() - start, 1)
    return row


def _cell(text: str) -> str:
    """Text safe for one markdown table cell."""
    return " ".join(str(text).split()).replace("|", r"\|")


def _verdict_cell(verdict: str) -> str:
    # Bold the verdict class ("claim holds", "mixed", ...) and keep the reasons plain.
    head, sep, reasons = verdict.partition(":")
    return f"**{_cell(head)}**{sep} {_cell(reasons)}" if sep else f"**{_cell(head)}**"


def _number(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _headline_cell(row: dict) -> str:
    """``name mean [lo, hi]`` per headline metric, and how many seeds (or items)."""
    parts = []
    for name, m in (row.get("headline") or {}).items():
        lo, hi = m["ci95"]
        parts.append(f"{name} {_number(m['mean'])} [{_number(lo)}, {_number(hi)}]")
    seeds = row.get("seeds")
    if seeds:
        parts.append(f"{len(seeds)} seeds")
    elif row.get("headline"):
        n = next(iter(row["headline"].values())).get("n")
        parts.append(f"over {n} items" if n else "no seeds")
    return _cell("; ".join(parts)) or "-"


def _published_cell(row: dict) -> str:
    parts = [f"{p.get('source', '?')}: {_number(p.get('value'))} (ours {_number(p.get('ours'))})"
             for p in row.get("published") or []]
    return _cell("; ".join(parts)) or "-"


def render_report(rows: list[dict], env: dict[str, str], smoke: bool, started: str) -> str:
    """REPORT.md: title, environment, one row per claim, figures, then any errors."""
    variant = "smoke (tiny, for tests)" if smoke else "tour"
    lines = [
        "# attnjax tour",
        "",
        f"Every registered experiment, {variant} configuration, started {started}. "
        "Each row is a claim from the classic explanations of attention, what was "
        "measured, and whether the measurement supports it.",
        "",
        "## Environment",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {label} | {_cell(text)} |" for label, text in env.items()),
        "",
        "## Claims",
        "",
        "| claim | experiment | rule (pre-registered) | headline: mean [95% CI] | published "
        "| verdict | figures |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        experiment_cell = (
            f"[`{row['name']}`]({row['dir']}/) `:{row['variant']}`, {row['wall_time_s']} s"
        )
        figures = ", ".join(f"[{f}]({row['dir']}/{f})"
                            for f in [*row["figures"], *row.get("pages", [])]) or "-"
        verdict = "**crashed**" if row["status"] == "error" else _verdict_cell(row["verdict"])
        lines.append(
            f"| {_cell(row['claim'])} | {experiment_cell} | {_cell(row.get('rule', '')) or '-'} "
            f"| {_headline_cell(row)} | {_published_cell(row)} | {verdict} | {figures} |"
        )
    measured = [row for row in rows if row.get("measured")]
    if measured:
        lines += ["", "## Measured", ""]
        lines += [f"- **{row['name']}**: {_cell(row['measured'])}" for row in measured]
    figure_rows = [row for row in rows if row["figures"]]
    if figure_rows:
        lines += ["", "## Figures"]
        for row in figure_rows:
            lines += ["", f"### {row['name']}", ""]
            lines += [f"![{row['name']}: {f}]({row['dir']}/{f})" for f in row["figures"]]
    failed = [row for row in rows if row["status"] == "error"]
    if failed:
        lines += ["", "## Errors"]
        for row in failed:
            lines += ["", f"### {row['name']}", "", "```", row["error"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the tour; returns 0 if every experiment ran, 1 if any crashed."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tour",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run the tiny smoke variants (seconds) instead of the tour ones",
    )
    parser.add_argument(
        "--workdir", default=None, metavar="DIR", help="output folder (default: runs/tour/<time>)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    started = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
    tour_dir = experiment.RunDir.create("tour", args.workdir)
    env = environment()
    rows = []
    progress = tqdm(REGISTRY.values(), desc="tour", unit="experiment")
    for spec in progress:
        progress.set_postfix_str(spec.name)
        variant = spec.smoke_variant if args.smoke else spec.tour_variant
        run_dir = experiment.RunDir.create(spec.name, tour_dir.path / spec.name)
        row = run_one(spec, variant, run_dir)
        rows.append(row)
        progress.write(f"{spec.name}: {row['verdict'].split(':')[0]} ({row['wall_time_s']} s)")

    report = tour_dir.path / "REPORT.md"
    report.write_text(render_report(rows, env, args.smoke, started))
    tour_dir.write_results({"smoke": args.smoke, "environment": env, "experiments": rows})
    failed = [row["name"] for row in rows if row["status"] == "error"]
    print(f"report: {report}")
    if failed:
        print(f"crashed: {', '.join(failed)} (tracebacks in the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
