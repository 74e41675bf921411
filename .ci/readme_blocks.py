"""Print one fenced block of README.md, the one after `<!-- readme-check: NAME ... -->`, so CI runs
README's commands exactly as written (`.ci/wheel-check`; tests/test_cli.py checks they parse).

    python .ci/readme_blocks.py NAME [README.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = re.compile(r"<!-- readme-check: (\S+)[^>]*-->\s*\n```[a-z]*\n(.*?)\n```", re.S)


def blocks(text: str) -> dict[str, str]:
    """Marked blocks of a README: name -> the commands of the fenced block after the marker."""
    return {match.group(1): match.group(2) for match in MARKER.finditer(text)}


def main() -> None:
    name = sys.argv[1]
    readme = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "README.md"
    found = blocks(readme.read_text(encoding="utf-8"))
    if name not in found:
        sys.exit(f"{readme}: no block marked `<!-- readme-check: {name} -->` (marked: {', '.join(found) or 'none'})")
    print(found[name])


if __name__ == "__main__":
    main()
