"""The README's Python examples run as written."""

import re

from tests.conftest import REPO_ROOT


def test_readme_python_examples_run():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), "README.md", "exec"), namespace)
    assert namespace["out"].shape == (2, 10, 8, 64)
    assert namespace["weights"].shape == (2, 8, 10, 12)
    assert namespace["w"].shape == (1, 4, 16, 16)
