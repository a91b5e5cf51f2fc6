"""The code examples the documentation shows, for the tests that run them: a module docstring's ``Example::`` block
and the README's Python code blocks."""

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def docstring_example(module) -> str:
    """The indented code block after ``Example::`` in ``module``'s docstring."""
    match = re.search(r"^Example::\n\n((?:    .*\n|\n)+)", module.__doc__, re.M)
    assert match, f"{module.__name__}: no 'Example::' block in its docstring"
    return textwrap.dedent(match.group(1))


def readme_example(containing: str) -> str:
    """The README's one ```python block that holds ``containing``."""
    blocks = [block for block in re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
              if containing in block]
    assert len(blocks) == 1, f"README.md: {len(blocks)} python blocks hold {containing!r}, expected 1"
    return blocks[0]
