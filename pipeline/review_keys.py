"""Review with single keys in a terminal: `a` then an axis key accepts, no Enter anywhere.

A reviewer makes hundreds of decisions; typing `a K` and Enter for each is twice the keys and
invites typos. In a terminal the review reads single keys (the terminal in cbreak mode: no Enter,
no echo, Ctrl-C still interrupts); each axis and each category of an axis has one key, shown on
screen. Lines are read only where text is wanted (a note, a `:` command). When stdin is not a
terminal (pipes, scripts) the line commands of `kia.review.interactive` are read instead.
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import Any, Protocol

from kia.errors import KiaError, ProposalChangedError
from kia.review import (
    ReviewSession,
    apply_command,
    axis_keys,
    category_keys,
    interactive,
    line_reader,
    show_paper,
)

ENTER = ("\r", "\n")
ESCAPE = "\x1b"
CTRL_D = "\x04"
# Arrow keys move between papers: right skips, left goes back.
ARROWS = {"\x1b[C": "s", "\x1bOC": "s", "\x1b[D": "b", "\x1bOD": "b"}
QUIT, REDRAW, STAY = "quit", "redraw", "stay"
DONE_HINT = "every axis decided: Enter (or s) goes to the next paper; n adds a note first"
KEY_HINT = (
    "keys: a accept  A accept all  e edit  r reject  n note  s skip  b back  d definitions  : command  ? help  q quit"
)


class KeyReader(Protocol):
    """Where keys and lines come from: the terminal, or a script in tests."""

    def key(self) -> str:
        """The next key pressed (an escape sequence, such as an arrow, as one key)."""
        ...

    def line(self, message: str, default: str = "") -> str:
        """A line of text, pre-filled with `default`; "" when the reviewer cancels."""
        ...


def split_keys(text: str) -> list[str]:
    """The keys in a chunk read from the terminal: one per character, an escape sequence whole.

    A fast typist, a paste or a test sends several keys before the program reads; each one counts."""
    keys: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == ESCAPE and index + 1 < len(text) and text[index + 1] in "[O":
            end = index + 2
            while end < len(text) and not "@" <= text[end] <= "~":
                end += 1
            keys.append(text[index : end + 1])
            index = end + 1
        else:
            keys.append(text[index])
            index += 1
    return keys


class LineEditor:
    """Lines edited with prompt_toolkit (pre-filled, cursor keys and history work), one session for
    the whole review; plain `input` where prompt_toolkit is missing."""

    def __init__(self) -> None:
        self.session: Any = None

    def read(self, message: str, default: str = "") -> str:
        """The line typed; "" when the reviewer cancels with Ctrl-C or Ctrl-D."""
        try:
            if self.session is None:
                from prompt_toolkit import PromptSession

                self.session = PromptSession()
            return str(self.session.prompt(message, default=default))
        except ImportError:  # pragma: no cover - prompt_toolkit is a dependency
            try:
                return input(message) or default
            except (EOFError, KeyboardInterrupt):
                return ""
        except (EOFError, KeyboardInterrupt):
            return ""


class TerminalKeys:
    """Single keys from a POSIX terminal, kept in cbreak mode for the whole review (not per key), so
    keys typed while a paper is being drawn are neither echoed nor lost; restored on exit."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.pending: list[str] = []
        self.saved: list[Any] | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.editor = LineEditor()

    def __enter__(self) -> TerminalKeys:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def key(self) -> str:
        """The next key; EOFError when the terminal closes."""
        while not self.pending:
            data = os.read(self.fd, 64)
            if not data:
                raise EOFError
            self.pending += split_keys(self.decoder.decode(data))
        return self.pending.pop(0)

    def line(self, message: str, default: str = "") -> str:
        """A line in the terminal's own mode; printable keys typed ahead are kept as its start."""
        import tty

        typed = "".join(k for k in self.pending if k.isprintable())
        self.pending.clear()
        self._restore()
        try:
            return self.editor.read(message, default + typed)
        finally:
            tty.setcbreak(self.fd)


def key_help(session: ReviewSession) -> str:
    """The keys, with each axis's key and each category's key taken from the taxonomy under review."""
    lines = [
        "keys (no Enter needed):",
        "  a, then an axis key   accept the proposed labels of an axis",
        "  A                     accept all axes",
        "  e, then an axis key   edit an axis: press the keys of its categories (several: toggle, then Enter)",
        "  r, then an axis key   reject an axis's proposal",
        "  t, then an axis key   take what the adapted head now proposes (shown under the axis)",
        "  d, then an axis key   definitions of the axis's categories",
        "  n                     edit your note on this paper (Enter saves; an empty line keeps the note)",
        "  s or right arrow      skip to the next paper     b or left arrow   back to the previous paper",
        '  :                     type a command as in a pipe (e.g. "e I I2,I3")',
        "  ?                     this help                  q                 quit (every decision is saved)",
        "  Esc                   cancel a key sequence",
        "axes:",
    ]
    for key, axis_id in axis_keys(session.taxonomy).items():
        axis = session.taxonomy.axis(axis_id)
        categories = "  ".join(f"{k} {c}" for k, c in category_keys(axis).items())
        lines.append(f"  {key} {axis.id} {axis.name}{'' if axis.multi else ' (one only)'}: {categories}")
    return "\n".join(lines)


def _axis_for_key(session: ReviewSession, key: str) -> str | None:
    """The axis of a key: its position key, or its id when the id is one letter ("k" for K)."""
    by_key = axis_keys(session.taxonomy)
    if key in by_key:
        return by_key[key]
    letters = [a for a in session.taxonomy.axis_ids if len(a) == 1 and a.lower() == key.lower()]
    return letters[0] if len(letters) == 1 else None


def pick_axis(session: ReviewSession, console: Any, keys: KeyReader, verb: str) -> str | None:
    """Ask for an axis by its key; None when cancelled with Esc."""
    choices = "  ".join(f"{k} {a}" for k, a in axis_keys(session.taxonomy).items())
    console.print(f"{verb}: which axis? {choices}  (Esc cancels) ", end="", markup=False)
    key = keys.key()
    if key == ESCAPE:
        console.print("cancelled", markup=False)
        return None
    axis = _axis_for_key(session, key)
    if axis is None:
        console.print("", markup=False)
        raise KiaError(f"no axis on key {key!r}; the axes are {choices}")
    console.print(axis, markup=False)
    return axis


def pick_categories(session: ReviewSession, axis_id: str, console: Any, keys: KeyReader) -> list[str] | None:
    """Categories of an axis by their keys: on a single-label axis one key picks; on a multi-label
    axis keys toggle (starting from the current labels) and Enter confirms. None when cancelled."""
    axis = session.taxonomy.axis(axis_id)
    by_key = category_keys(axis)
    if len(by_key) < len(axis.categories):  # more categories than keys: type their ids
        typed = keys.line(f"{axis.id} categories (ids, comma-separated): ")
        return [c for c in typed.replace(" ", ",").split(",") if c] or None
    how = "several allowed: keys toggle, Enter saves" if axis.multi else "one only: its key saves"
    console.print(f"edit {axis.id} {axis.name} ({how}; Esc cancels):", markup=False)
    for key, category in by_key.items():
        console.print(f"   {key} {category} {session.taxonomy.category(category).name}", markup=False)
    selected = session.edit_start(axis.id) if axis.multi else set()
    while True:
        shown = ", ".join(c for c in axis.category_ids if c in selected) or "none"
        console.print(f"   selected: {shown} > " if axis.multi else "   > ", end="", markup=False)
        key = keys.key()
        if key == ESCAPE:
            console.print("cancelled", markup=False)
            return None
        if key in by_key and not axis.multi:
            console.print(by_key[key], markup=False)
            return [by_key[key]]
        if key in by_key:
            selected ^= {by_key[key]}
            console.print(f"{'+' if by_key[key] in selected else '-'}{by_key[key]}", markup=False)
        elif key in ENTER and axis.multi and selected:
            console.print("", markup=False)
            return [c for c in axis.category_ids if c in selected]
        elif key in ENTER and axis.multi:
            console.print("! pick at least one category (Esc cancels)", markup=False, style="red")
        else:
            console.print(f"! no category on key {key!r}", markup=False, style="red")


def show_definitions(session: ReviewSession, axis_id: str, console: Any) -> None:
    """Every category of an axis with its key, name, definition and examples."""
    axis = session.taxonomy.axis(axis_id)
    for key, category_id in category_keys(axis).items():
        category = session.taxonomy.category(category_id)
        console.print(f"  {key} {category.id} {category.name}: {category.definition}", markup=False)
        if category.instantiations:
            console.print(f"      e.g. {'; '.join(category.instantiations)}", markup=False)


def _axis_action(session: ReviewSession, key: str, console: Any, keys: KeyReader) -> str:
    """`a`, `r`, `e` or `d`, then an axis key (and for `e` the categories)."""
    verb = {"a": "accept", "r": "reject", "e": "edit", "d": "definitions", "t": "take"}[key]
    axis = pick_axis(session, console, keys, verb)
    if axis is None:
        return STAY
    if key == "d":
        show_definitions(session, axis, console)
        return STAY
    if key == "a":
        session.accept(axis)
    elif key == "r":
        session.reject(axis)
    elif key == "t":
        session.take(axis)
    else:
        chosen = pick_categories(session, axis, console, keys)
        if chosen is None:
            return STAY
        session.edit(axis, chosen)
    return REDRAW  # the paper stays on screen, its last decision shown: a note is still possible


def _edit_note(session: ReviewSession, console: Any, keys: KeyReader) -> str:
    """`n`: a line pre-filled with the reviewer's note; a changed text is stored as the new note."""
    console.print("note", markup=False)
    changed = session.edit_note(keys.line("note (Enter saves; empty keeps it): ", session.own_note()))
    console.print("note saved" if changed else "note unchanged", markup=False)
    return REDRAW if changed else STAY


def handle_key(session: ReviewSession, key: str, console: Any, keys: KeyReader) -> str:
    """Act on one key: QUIT, REDRAW (something changed: show the paper again) or STAY. Bad input
    raises KiaError (the caller prints it and stays on the same paper)."""
    key = ARROWS.get(key, key)
    if key in ("q", CTRL_D):
        console.print("quit", markup=False)
        return QUIT
    if key in ("a", "r", "e", "d", "t"):
        return _axis_action(session, key, console, keys)
    if key == "A":
        console.print("accept all", markup=False)
        session.accept_all()
        return REDRAW
    if key == "n":
        return _edit_note(session, console, keys)
    if key in ("s", "b"):
        console.print("skip" if key == "s" else "back", markup=False)
        session.next() if key == "s" else session.back()
        return REDRAW
    if key == "?":
        console.print("help", markup=False)
        console.print(key_help(session), markup=False)
        return STAY
    if key == ":":
        command = keys.line("command: ")
        if not apply_command(session, command, console):
            return QUIT
        return REDRAW if command.strip()[:1] in ("a", "A", "e", "r", "t", "n", "s", "b") else STAY
    if key in ENTER and not session.done and session.finished(session.current):
        # Every axis decided: Enter moves on (after a note, if wanted), and the queue learns between
        # papers as it does after a line command (calibration map, adapting head: `session.learner`).
        console.print("next", markup=False)
        session.advance_if_finished()
        return REDRAW
    if key in ENTER or key == " " or key.startswith(ESCAPE):  # Esc, or a sequence of a key without a use
        console.print("", markup=False)
        return STAY
    console.print("", markup=False)
    raise KiaError(f"no action on key {key!r}; press ? for the keys")


def _hints(session: ReviewSession, console: Any) -> None:
    """The keys under a paper, and how to move on once every axis is decided."""
    console.print(KEY_HINT, markup=False, style="dim")
    if session.finished(session.current):
        console.print(DONE_HINT, markup=False, style="bold")


def interactive_keys(session: ReviewSession, console: Any, keys: KeyReader) -> int:
    """The single-key review loop; returns the number of papers left. Ctrl-C and Ctrl-D quit cleanly."""
    shown: int | None = None
    try:
        while not session.done:
            if shown != session.index:
                if getattr(console, "is_terminal", False):
                    console.clear()  # one paper per screen, redrawn, not scrolled past
                if show_paper(session, console, lambda: _hints(session, console)):
                    shown = session.index
            console.print("review> ", end="", markup=False)
            before = session.index
            try:
                action = handle_key(session, keys.key(), console, keys)
            except KiaError as exc:
                console.print(f"! {exc}", markup=False, style="red")
                if session.index != before or isinstance(exc, ProposalChangedError):
                    # decided, then failed (the file busy), or the proposal changed: show the paper as it is now
                    shown = None
                continue
            if action == QUIT:
                break
            if action == REDRAW:
                shown = None
    except KeyboardInterrupt:
        console.print("\ninterrupted: every decision so far is saved", markup=False)
    except EOFError:
        console.print("", markup=False)
    left = session.left()
    console.print(f"{left} paper(s) left to review", markup=False)
    return left


def review_in_terminal(session: ReviewSession, console: Any) -> int:
    """Review with single keys when stdin is a terminal (POSIX), else with line commands (pipes,
    scripts, Windows); returns the number of papers left.

    The store is let go first: from here the session holds it only while it reads or writes, so a
    review waiting for a key blocks neither `kia serve`, a second reviewer nor any other command."""
    session.store.close()
    if sys.stdin.isatty() and os.name == "posix":
        with TerminalKeys() as keys:
            return interactive_keys(session, console, keys)
    return interactive(session, console, line_reader(session.taxonomy))
