"""One exception hierarchy for kia, so the CLI can turn any failure into one clear line.

Every error names the thing it concerns (a file, a paper key, a taxonomy file) and the cause;
`str(err)` is the single line a user sees.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class KiaError(Exception):
    """Base class: anything kia raises on purpose."""


class UsageError(KiaError):
    """An option's value kia cannot use (out of its range, not one of its words): a bad command line,
    so the CLI exits 2 as it does for an unknown option, and says so before any work is done."""


def check_range(
    option: str, value: float, low: float | None = None, high: float | None = None, *, above: bool = False
) -> None:
    """Refuse `value` outside [low, high] (`above`: low itself is refused too) in one line naming the
    option, the value and the range: every numeric option of every command words it the same way."""
    too_low = low is not None and (value <= low if above else value < low)
    if too_low or (high is not None and value > high):
        raise UsageError(f"{option} must be {allowed_range(low, high, above=above)}, not {value:g}")


def allowed_range(low: float | None, high: float | None, *, above: bool = False) -> str:
    """The range in words: `between 0.5 and 0.999`, `at least 1`, `above 0 and at most 1`."""
    if low is not None and high is not None and not above:
        return f"between {low:g} and {high:g}"
    parts = [] if low is None else [f"{'above' if above else 'at least'} {low:g}"]
    parts += [] if high is None else [f"at most {high:g}"]
    return " and ".join(parts)


class ExtractError(KiaError):
    """A document could not be turned into text (corrupt, encrypted, scanned, empty...)."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"{path}: {cause}")


class UnsupportedFormatError(ExtractError):
    """The file's extension is not one kia can read."""


class TaxonomyError(KiaError):
    """The taxonomy file is missing or does not have the expected shape."""


class GoldError(KiaError):
    """The gold-label CSV is missing or malformed."""


class StoreError(KiaError):
    """The database could not be opened or written (locked, corrupt, wrong version)."""


class DatabaseBusyError(StoreError):
    """Another process held the database file for longer than kia waits (DuckDB lets one process
    write at a time). Apart from other store errors because it passes: a person can try again in a
    moment, so an interactive review says what was not saved instead of ending."""

    def __init__(self, path: str, holder: str | None, waited: float) -> None:
        self.path = path
        self.holder = holder
        self.waited = waited
        who = f": {holder}" if holder else ""
        after = f" (waited {waited:.0f} s)" if waited >= 1 else ""
        # What happened, without the advice: a caller with other advice (an interactive review) reuses it.
        self.reason = f"{path}: database is locked by another process{who}{after}"
        super().__init__(f"{self.reason}; wait for it to finish or use another --db")


class PaperNotFoundError(KiaError):
    """A paper key was asked for that is not in the database."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no paper with key {key!r} in the database (see `kia papers`)")


class NoteConflictError(KiaError):
    """A note was written from a page that showed another note than the stored one (another tab or
    the terminal changed it meanwhile): refused, so neither note is replaced unseen. `current` is
    the stored note, for the page to show and start from."""

    def __init__(self, message: str, current: str) -> None:
        self.current = current
        super().__init__(message)


class ProposalChangedError(KiaError):
    """A decision on a proposal other than the one the reviewer was shown: the run labelled the paper
    again (a new version, `kia propose` resumed) after the page or screen was drawn. Refused, so an
    accept never stores labels the reviewer did not see; the paper is shown again to decide anew."""


class BackendError(KiaError):
    """A proposal backend failed for a paper (after its retries)."""


class ProposalValidationError(KiaError):
    """A model answer did not fit the taxonomy's schema (label outside it, empty axis...)."""


@contextmanager
def reading(path: Path, what: str, error: type[KiaError] = KiaError) -> Iterator[None]:
    """Around the reading of a file the user names: missing, a folder or unreadable is one `error`
    line naming the file and the cause, never an OSError from deep inside a command."""
    try:
        yield
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder, not a {what}") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc


@contextmanager
def writing_to(path: Path, what: str, error: type[KiaError] = KiaError) -> Iterator[None]:
    """Around the writing of a file the user names (`--out`, `--batch-file`): a folder, a folder that
    does not exist, a file that cannot be written or a full disk is one `error` line naming it."""
    try:
        yield
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder; give the {what} a file name") from exc
    except FileNotFoundError as exc:
        raise error(
            f"{path}: its folder {path.parent} does not exist; create it or write the {what} elsewhere"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            # A write() that fails names no file (exc.filename is None): name the one being written.
            raise error(
                f"{path}: disk full ({exc.strerror or exc}) while writing the {what}; free space and rerun"
            ) from exc
        raise error(f"{path}: cannot write the {what} ({exc.strerror or exc})") from exc


def write_whole(path: Path, content: str | bytes, what: str, error: type[KiaError] = KiaError) -> None:
    """Write a file the user names (`--out`, `--json`, a batch file) complete or not at all.

    Writing in place truncates the previous file first, so a full disk mid-write would destroy a
    good export and leave a cut-off one under its name. Instead the content goes to a hidden
    temporary file in the same folder, is flushed to disk and renamed over `path`; on any failure
    the temporary file is removed and a previous `path` stays byte for byte as it was. Failures are
    one `error` line naming `path` (`writing_to`). The folder is created when missing.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    with writing_to(path, what, error):
        if path.exists() and not path.is_file() and not path.is_dir():
            # /dev/stdout, a named pipe: nothing to keep and no folder to write in, so in place
            with open(path, "wb") as sink:
                sink.write(data)
            return
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise error(f"{path}: {blocking} is a file, not a folder; write the {what} elsewhere")
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path.resolve() if path.is_symlink() else path  # replace the file a link points to
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if target.exists() and not target.stat().st_mode & 0o222:  # no write bit (root could write it anyway)
            # renaming over it would succeed (the folder is writable): a read-only file is kept, as cp would
            raise error(f"{path}: the file is read-only; make it writable or write the {what} elsewhere")
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
            with os.fdopen(handle, "wb") as sink:
                sink.write(data)
                sink.flush()
                os.fsync(sink.fileno())
            if target.exists():  # the new file keeps the old one's permissions
                os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def read_user_text(path: Path, what: str, error: type[KiaError] = KiaError, line_word: str = "line") -> str:
    """A file the user names (taxonomy, gold, prompt, batch output) as UTF-8 text, or one `error`
    line naming it and the cause (`reading`), or a byte that is not UTF-8 (with its line), where
    Python would raise UnicodeDecodeError from deep inside a command."""
    with reading(path, what, error):
        data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{path}: {line_word} {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at character {column});"
            f" save the {what} as UTF-8"
        ) from None


class IdentityConflictError(KiaError):
    """A library record names two different stored papers (its DOI one, its arXiv id another; or
    its title two papers that share it): taking either would give one paper's text and labels to
    the other, so it is linked to neither. `papers` is (paper key, what names it) per paper."""

    def __init__(self, papers: list[tuple[str, str]]) -> None:
        self.papers = papers
        named = ", ".join(f"{what} names stored paper {key}" for key, what in papers)
        super().__init__(f"identity conflict: {named}")
