"""Text from papers, libraries and file names, shown in a terminal.

Paper text is untrusted: an escape sequence in a title or a sentence ("\\x1b]0;...", "\\x1b[2J")
would retitle, clear or recolour the reader's terminal, a bidi override would show words in another
order than stored, and a line break in a file name would forge a line of `kia ingest`'s output.
`visible()` writes every such character as its escape (`\\x1b`, `\\u202e`), and `SafeConsole` does
so for everything it prints (rich's own cursor moves are kept).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment

# C0 and C1 controls (tab, line feed and carriage return handled by the caller), DEL, and the
# format characters that reorder or hide text: bidi embeddings, overrides, isolates and marks;
# zero-width spaces and joiners, the word joiner, invisible operators and the byte order mark (two
# reviewer names or keys that print alike must not differ unseen); and Unicode tag characters,
# which carry invisible ASCII ("ASCII smuggling").
_CONTROL_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\U000e0000-\U000e007f]"
)
_LINE_RE = re.compile("[\t\n\r\u2028\u2029\x85]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, one_line: bool = False) -> str:
    """`text` with every control character written as its escape; with `one_line`, line breaks and
    tabs too (a name or a one-line message never spans two lines)."""
    text = _CONTROL_RE.sub(_escape, text)
    return _LINE_RE.sub(_escape, text) if one_line else text


class SafeConsole(Console):
    """A rich Console that makes the control characters of what it prints visible (`visible`) and
    reads no markup unless a print asks for it (`markup=True`): titles, keys, category names and
    reviewer names are data, and "[link=...]" or "[/]" in them must print as typed, in table cells
    and rules too, never become a hyperlink or a crash."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None:
            # rich fixes the width from $COLUMNS once, at construction; kia's consoles are made when
            # kia.cli is imported, so a command run in-process later (the API's callers, the tests'
            # CliRunner with its own COLUMNS) would print at whatever width the importer had. Left
            # unset, rich reads the terminal or $COLUMNS at each print.
            self._width = None

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else Segment(visible(segment.text), segment.style, None) for segment in buffer
        )
