"""The README's Python examples run as written."""

import re

from attnjax import pretrained
from tests.conftest import REPO_ROOT

# Blocks that need an optional model package run only where it is installed (CI installs
# both); the rest of the README must work without them.
NEEDS = {"load_bert(": pretrained.minilm_available, "load_llama(": pretrained.smollm2_available}


def test_readme_python_examples_run():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    runnable = [b for b in blocks
                if all(available() for call, available in NEEDS.items() if call in b)]
    namespace: dict = {}
    exec(compile("\n".join(runnable), "README.md", "exec"), namespace)
    assert namespace["out"].shape == (2, 10, 8, 64)
    assert namespace["weights"].shape == (2, 8, 10, 12)
    assert namespace["w"].shape == (1, 4, 16, 16)
    if pretrained.smollm2_available():  # the LLM block
        assert namespace["seen"].attention.shape[:3] == (30, 1, 9)
        assert namespace["lens"].shape[-1] == 49152
