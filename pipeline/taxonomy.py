"""Stage: the taxonomy as data. A validated model of any survey's axes and categories.

The default is the survey's K x I x A taxonomy shipped in `labels/taxonomy.yaml`; `--taxonomy FILE`
points at any other survey's file (1 to 6 axes of any ids, each multi- or single-label), so nothing
downstream hard-codes K, I or A. `check_taxonomy_file` reports what a survey author gets wrong in
such a file (duplicate ids, dangling `implies`, patterns that can hang), each with its line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from kia.errors import TaxonomyError, read_user_text
from kia.plainyaml import RefusedYAMLError, refused_node
from kia.plainyaml import parse as _parse_yaml
from kia.resources import default_taxonomy_path

MAX_AXES = 6


class SentenceMatcher(Protocol):
    """A compiled pattern: RE2's or Python's, both with `search`."""

    def search(self, text: str) -> Any:
        """The first match in `text`, or None."""
        ...


def _re2() -> Any | None:
    """The RE2 module (google-re2), or None where it is not installed."""
    try:
        import re2
    except ImportError:  # pragma: no cover - google-re2 is a dependency
        return None
    return re2


# Seconds one search of one pattern RE2 cannot run may take before it counts as no match.
PATTERN_TIMEOUT = 0.05


class BoundedPattern:
    """A pattern RE2 cannot compile (a lookaround, a backreference), searched with the `regex`
    module under a time bound: a pattern that would backtrack catastrophically on some sentence
    gives up on that sentence (no match, counted in `timed_out`) instead of hanging `propose`."""

    def __init__(self, pattern: str, timeout: float = PATTERN_TIMEOUT) -> None:
        import regex

        self.pattern = pattern
        self.timeout = timeout
        self.timed_out = 0
        self._compiled = regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)

    def search(self, text: str) -> Any:
        """The first match in `text`, or None (also when the search ran out of time)."""
        try:
            return self._compiled.search(text, timeout=self.timeout)
        except TimeoutError:
            self.timed_out += 1
            return None


def re2_compile(pattern: str, case_sensitive: bool = True) -> Any | None:
    """`pattern` compiled by RE2 (linear time), or None where RE2 is missing or cannot compile it
    (a lookaround, a backreference)."""
    re2 = _re2()
    if re2 is None:
        return None
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except Exception:  # noqa: BLE001 - RE2 raises its own error type for unsupported syntax
        return None


def compile_pattern(pattern: str) -> SentenceMatcher:
    """Case-insensitive, with RE2 (linear time) where RE2 compiles it, else under a time bound
    (`BoundedPattern`): no pattern of a taxonomy file can hang the classifier."""
    compiled = re2_compile(pattern, case_sensitive=False)
    return compiled if compiled is not None else BoundedPattern(pattern)


class Category(BaseModel):
    """One category of an axis: its id (e.g. K2), name, definition, examples and cue terms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1)
    definition: str = Field(min_length=1)
    instantiations: list[str] = Field(default_factory=list)
    cues: list[str] = Field(default_factory=list)
    # Regular expressions for evidence that no fixed phrase captures, such as a construction whose
    # words vary ("generating ... masks in conjunction with the images"); matched per sentence.
    patterns: list[str] = Field(default_factory=list)
    excludes: list[str] = Field(default_factory=list)
    # Categories of the same axis that this one cannot work without, by definition (classifier-free
    # guidance mixes a conditional network's predictions, so the condition is a model input too).
    implies: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns

    @cached_property
    def compiled_patterns(self) -> list[SentenceMatcher]:
        """The patterns, compiled case-insensitively (once per category): with RE2, a linear-time
        engine, wherever RE2 can compile the pattern, so no pattern can hang the classifier; Python's
        `re` only for what RE2 lacks (lookarounds), which `check_taxonomy_file` has checked for
        nested quantifiers."""
        return [compile_pattern(p) for p in self.patterns]

    def description(self) -> str:
        """The text a sentence is compared with: name, definition and instantiations."""
        examples = "; ".join(self.instantiations)
        return f"{self.name}. {self.definition} Examples: {examples}."


class Axis(BaseModel):
    """An axis of the design space; a paper gets a non-empty set of its categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1)
    question: str = ""
    definition: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)
    default: str | None = None
    # False: a paper gets exactly one category on this axis (enforced by the response schema, by
    # `kia label` and by `kia review`); True: a non-empty set.
    multi: bool = True

    @field_validator("categories")
    @classmethod
    def _unique_categories(cls, categories: list[Category]) -> list[Category]:
        ids = [c.id for c in categories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate category ids {duplicates}")
        for category in categories:
            for relation, targets in (("excludes", category.excludes), ("implies", category.implies)):
                unknown = sorted(set(targets) - set(ids))
                if unknown:
                    raise ValueError(f"{category.id} {relation} {unknown}, which are not categories of this axis")
        for category in categories:
            problem = _never_labelled(category.id, categories)
            if problem:
                raise ValueError(problem)
        return categories

    @model_validator(mode="after")
    def _default_on_axis(self) -> Axis:
        if self.default is not None and self.default not in self.category_ids:
            raise ValueError(f"default {self.default!r} is not a category of axis {self.id}")
        return self

    @property
    def category_ids(self) -> list[str]:
        """Category ids in file order."""
        return [c.id for c in self.categories]


def _never_labelled(category_id: str, categories: list[Category]) -> str | None:
    """Why a category could never be a label, when its `implies` (followed through) reach a pair
    that `excludes` forbids ("dense implies sparse" with "sparse excludes dense"), else None."""
    by_id = {c.id: c for c in categories}
    reached, todo = {category_id}, [category_id]
    while todo:
        for implied in by_id[todo.pop()].implies:
            if implied not in reached:
                reached.add(implied)
                todo.append(implied)
    for first in sorted(reached):
        clash = sorted(set(by_id[first].excludes) & reached)
        if clash:
            return (
                f"{category_id} implies {', '.join(sorted(reached - {category_id})) or 'itself'}, but {first} excludes "
                f"{', '.join(clash)}: {category_id} could never be a label"
            )
    return None


class Taxonomy(BaseModel):
    """A survey's taxonomy: axes of categories, plus where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    title: str = ""
    source: str = ""
    scope: str = ""
    # Rules the survey applies beyond its definitions (how it decides the hard cases), each citing the
    # survey's own words; numbered in the prompt. Never the label of a specific paper.
    conventions: list[str] = Field(default_factory=list)
    # Phrases that contain a cue word but are no evidence for anything ("masked language
    # modelling" is not a segmentation mask); removed from sentences before cue matching.
    ignore_phrases: list[str] = Field(default_factory=list)
    axes: list[Axis] = Field(min_length=1, max_length=MAX_AXES)
    # The YAML text the taxonomy was read from (stored with each run, so a run can be read back
    # with the taxonomy it used); None for a taxonomy built in code.
    _source_text: str | None = PrivateAttr(default=None)

    @property
    def source_text(self) -> str:
        """The file the taxonomy was read from, else its canonical YAML form."""
        if self._source_text is not None:
            return self._source_text
        return yaml.safe_dump(self.model_dump(), sort_keys=False, allow_unicode=True)

    @cached_property
    def ignore_pattern(self) -> re.Pattern[str] | None:
        """One case-insensitive pattern for all ignored phrases (None when there are none)."""
        if not self.ignore_phrases:
            return None
        alternatives = sorted((re.escape(p) for p in self.ignore_phrases), key=len, reverse=True)
        return re.compile(r"\b(?:" + "|".join(alternatives) + r")\w*", re.IGNORECASE)

    @model_validator(mode="after")
    def _globally_unique_ids(self) -> Taxonomy:
        axis_ids = [a.id for a in self.axes]
        if len(set(axis_ids)) != len(axis_ids):
            raise ValueError(f"duplicate axis ids in {axis_ids}")
        cat_ids = [c.id for a in self.axes for c in a.categories]
        if len(set(cat_ids)) != len(cat_ids):
            raise ValueError("category ids must be unique across axes")
        both = sorted(set(axis_ids) & set(cat_ids))
        if both:  # `kia label --set K=K` and the ids found in text could not tell them apart
            raise ValueError(f"{', '.join(both)}: an id of an axis and of a category; ids are unique across the file")
        return self

    @property
    def axis_ids(self) -> list[str]:
        """Axis ids in file order."""
        return [a.id for a in self.axes]

    def axis(self, axis_id: str) -> Axis:
        """The axis with this id."""
        for axis in self.axes:
            if axis.id == axis_id:
                return axis
        raise TaxonomyError(f"taxonomy {self.name!r} has no axis {axis_id!r} (axes: {self.axis_ids})")

    def category(self, category_id: str) -> Category:
        """The category with this id, on whichever axis."""
        for axis in self.axes:
            for category in axis.categories:
                if category.id == category_id:
                    return category
        raise TaxonomyError(f"taxonomy {self.name!r} has no category {category_id!r}")

    def axis_of(self, category_id: str) -> str:
        """The id of the axis that holds a category."""
        for axis in self.axes:
            if category_id in axis.category_ids:
                return axis.id
        raise TaxonomyError(f"taxonomy {self.name!r} has no category {category_id!r}")

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON form, stored with each run.

        An axis's `multi: true` (the default, and the only behaviour before the field existed) is
        left out of the form, so a taxonomy that does not use the field keeps the hash it had:
        stored runs and the learned head built for it still match."""
        data = self.model_dump(mode="json")
        for axis in data["axes"]:
            if axis.get("multi") is True:
                del axis["multi"]
        canonical = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @cached_property
    def label_axes(self) -> dict[str, tuple[bool, tuple[str, ...]]]:
        """Axis id -> (multi-label, sorted category ids): what a decision about a paper's labels is
        made of. Wording (names, definitions, cues, examples, patterns) is no part of it."""
        return {axis.id: (axis.multi, tuple(sorted(axis.category_ids))) for axis in self.axes}

    @cached_property
    def label_hash(self) -> str:
        """sha256 of the taxonomy's name and `label_axes`: its identity as far as reviews go.

        A review decides which category ids of an axis a paper has; that decision stays true when a
        definition's wording is fixed, so reviews are matched to a taxonomy by this hash (and, where
        it differs, axis by axis: `kia.labelings.ReviewScope`), never by `content_hash`, which changes
        with every character of the file and stays the run's record of the exact text it used."""
        data = {
            "name": self.name,
            "axes": {k: [multi, list(ids)] for k, (multi, ids) in sorted(self.label_axes.items())},
        }
        return hashlib.sha256(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()

    def differences(self, other: Taxonomy) -> list[str]:
        """What differs from `other` (the taxonomy it was edited from), in words, most telling first:
        the name, axes or categories added or removed, single/multi-label changes, then per
        category the fields edited (`definitions of K2, I3`). Empty when the two are the same."""
        found: list[str] = []
        if self.name != other.name:
            found.append(f"name {other.name!r} -> {self.name!r}")
        mine, theirs = {a.id: a for a in self.axes}, {a.id: a for a in other.axes}
        added, removed = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        if added:
            found.append(f"axes added: {', '.join(added)}")
        if removed:
            found.append(f"axes removed: {', '.join(removed)}")
        edited: dict[str, list[str]] = {}
        for axis_id in [a for a in mine if a in theirs]:
            new, old = mine[axis_id], theirs[axis_id]
            if new.multi != old.multi:
                found.append(f"axis {axis_id} is now {'multi' if new.multi else 'single'}-label")
            gained = [c for c in new.category_ids if c not in old.category_ids]
            lost = [c for c in old.category_ids if c not in new.category_ids]
            if gained:
                found.append(f"categories added to {axis_id}: {', '.join(gained)}")
            if lost:
                found.append(f"categories removed from {axis_id}: {', '.join(lost)}")
            for field_name in ("name", "question", "definition", "default"):
                if getattr(new, field_name) != getattr(old, field_name):
                    edited.setdefault(f"{field_name}s", []).append(f"axis {axis_id}")
            before = {c.id: c for c in old.categories}
            for category in new.categories:
                if category.id not in before:
                    continue
                now = category.model_dump()
                for field_name, value in before[category.id].model_dump().items():
                    if now[field_name] != value:
                        edited.setdefault(_plural(field_name), []).append(category.id)
            if new.category_ids != old.category_ids and not gained and not lost:
                edited.setdefault("order of categories", []).append(f"axis {axis_id}")
        found.extend(f"{field_name} of {', '.join(where)}" for field_name, where in edited.items())
        found.extend(
            f"the {field_name}"
            for field_name in ("title", "source", "scope", "conventions", "ignore_phrases")
            if getattr(self, field_name) != getattr(other, field_name)
        )
        if not found and self.content_hash != other.content_hash:
            found.append("the order of axes")
        return found

    def render_definitions(self) -> str:
        """The taxonomy as prompt text: every axis, category, definition and examples."""
        lines: list[str] = []
        for axis in self.axes:
            lines.append(f"Axis {axis.id} - {axis.name}: {axis.definition}")
            if axis.question:
                lines.append(f"  Question: {axis.question}")
            for category in axis.categories:
                lines.append(f"  {category.id} - {category.name}: {category.definition}")
                if category.instantiations:
                    lines.append(f"    Examples: {'; '.join(category.instantiations)}")
            lines.append("")
        return "\n".join(lines).strip()

    def render_compact(self) -> str:
        """The taxonomy as compact prompt text: one line per axis (its question) and per category
        (definition, then examples in brackets); the same for every paper."""
        lines: list[str] = []
        for axis in self.axes:
            lines.append(f"{axis.id} {axis.name}: {axis.question or axis.definition}")
            for category in axis.categories:
                examples = f" [e.g. {'; '.join(category.instantiations)}]" if category.instantiations else ""
                lines.append(f"- {category.id} {category.name}: {' '.join(category.definition.split())}{examples}")
        return "\n".join(lines)

    def render_conventions(self) -> str:
        """The conventions as a numbered list ("" when there are none)."""
        return "\n".join(f"{i}. {' '.join(rule.split())}" for i, rule in enumerate(self.conventions, 1))


def _plural(field_name: str) -> str:
    """A category field's name as `differences` lists it (`definitions`, `cues`, `examples`)."""
    if field_name == "instantiations":
        return "examples"
    return field_name if field_name.endswith("s") else f"{field_name}s"


def resolve_taxonomy_path(option: str | os.PathLike[str] | None) -> Path:
    """The file given (the CLI passes `--taxonomy`, else the settings' `$KIA_TAXONOMY`), else the
    shipped K x I x A file."""
    return Path(option) if option else default_taxonomy_path()


def load_taxonomy(path: str | os.PathLike[str] | None = None) -> Taxonomy:
    """Read and validate a taxonomy YAML file; one-line TaxonomyError naming the file otherwise."""
    resolved = resolve_taxonomy_path(path)
    text = read_user_text(resolved, "taxonomy file", TaxonomyError)
    try:
        raw = _parse_yaml(text)
    except RefusedYAMLError as exc:
        raise TaxonomyError(f"{resolved}:{yaml_problem(exc).line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        problem = yaml_problem(exc)
        line = f":{problem.line}" if problem.line else ""
        raise TaxonomyError(f"{resolved}{line}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{resolved}: a taxonomy is a mapping with 'name' and 'axes'")
    try:
        taxonomy = Taxonomy.model_validate(raw)
    except ValidationError as exc:
        first = min(validation_problems(yaml.compose(text), exc), key=lambda problem: problem.line)
        more = len(exc.errors()) - 1
        also = f" (and {more} more: `kia taxonomy check {resolved}` lists them)" if more else ""
        raise TaxonomyError(f"{resolved}:{first.line}: invalid taxonomy at {first.message}{also}") from exc
    taxonomy._source_text = text
    return taxonomy


def taxonomy_from_text(text: str, where: str) -> Taxonomy:
    """A taxonomy from YAML text stored with a run; `where` names it in errors."""
    try:
        taxonomy = Taxonomy.model_validate(_parse_yaml(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise TaxonomyError(f"{where}: the stored taxonomy no longer validates ({str(exc).splitlines()[0]})") from exc
    taxonomy._source_text = text
    return taxonomy


# --- checking a taxonomy file ---------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a taxonomy file, with the line it is on (1-based; 0 when unknown)."""

    line: int
    message: str
    severity: str = "error"  # `error` (the file is refused) or `note` (worth knowing, accepted)

    def render(self, path: str | os.PathLike[str]) -> str:
        """`FILE:LINE: error: message`, as compilers print it."""
        return f"{path}:{self.line}: {self.severity}: {self.message}"


def yaml_problem(exc: yaml.YAMLError) -> Problem:
    """YAML that does not parse (or a tag the safe loader refuses), on the line PyYAML names (0
    when it names none)."""
    mark = getattr(exc, "problem_mark", None)
    said = exc.problem if isinstance(exc, RefusedYAMLError) else f"not valid YAML: {str(exc).splitlines()[0]}"
    return Problem(int(mark.line) + 1 if mark else 0, str(said))


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1 if node is not None else 0


def _mapping_get(node: Any, key: str) -> Any:
    """The value node under `key` of a YAML mapping node (None when absent or not a mapping)."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return None


def _sequence(node: Any) -> list[Any]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _scalar(node: Any) -> str:
    return str(node.value).strip() if isinstance(node, yaml.ScalarNode) and node.value is not None else ""


def nested_quantifier(pattern: str) -> str | None:
    """The reason a pattern can backtrack catastrophically, else None.

    An unbounded repetition (`+`, `*`, `{n,}`) of something that itself repeats, such as `(a+)+` or
    `(\\w*\\s?)*`, makes a backtracking engine try exponentially many splits of one run of
    characters. A bounded outer repetition (`(\\w+\\W+){0,3}`) costs a polynomial at worst and is
    allowed.
    """
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - Python < 3.11 keeps it as sre_parse
        import sre_parse  # type: ignore[no-redef]
    repeats = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)}
    unbounded = sre_parse.MAXREPEAT

    def repeats_inside(items: Any) -> bool:
        for op, arg in items:
            if op in repeats:
                return True
            if op == sre_parse.SUBPATTERN and repeats_inside(arg[-1]):
                return True
            if op == sre_parse.BRANCH and any(repeats_inside(branch) for branch in arg[1]):
                return True
        return False

    def walk(items: Any) -> str | None:
        for op, arg in items:
            if op in repeats:
                low, high, body = arg
                if high == unbounded and repeats_inside(body):
                    return "an unbounded repetition of a repetition (e.g. (a+)+) can backtrack catastrophically"
                found = walk(body)
            elif op == sre_parse.SUBPATTERN:
                found = walk(arg[-1])
            elif op == sre_parse.BRANCH:
                found = next((r for r in (walk(b) for b in arg[1]) if r), None)
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                found = walk(arg[1])
            else:
                found = None
            if found:
                return found
        return None

    return walk(sre_parse.parse(pattern))


def check_pattern(pattern: str) -> list[tuple[str, str]]:
    """(severity, message) for a pattern: it must compile and must not nest unbounded quantifiers;
    one RE2 cannot compile (a lookaround, a backreference) is matched by Python's `re` (a note)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return [("error", f"pattern {pattern!r} does not compile: {exc}")]
    found: list[tuple[str, str]] = []
    reason = nested_quantifier(pattern)
    if reason:
        found.append(("error", f"pattern {pattern!r}: {reason}"))
    re2 = _re2()
    if re2 is not None:
        try:
            options = re2.Options()
            options.log_errors = False
            re2.compile(pattern, options)
        except Exception as exc:  # noqa: BLE001 - RE2's error type
            found.append(
                (
                    "note",
                    f"pattern {pattern!r} is not linear-time (RE2 cannot compile it: {exc}); matched with a"
                    f" {PATTERN_TIMEOUT * 1000:.0f} ms bound per sentence",
                )
            )
    return found


def check_taxonomy_text(text: str) -> list[Problem]:
    """Everything wrong in a taxonomy file's text, each with its line, in file order.

    Reported: YAML that does not parse, a missing name or axes, more than MAX_AXES axes, duplicate
    axis or category ids, empty axes, missing definitions, `implies`/`excludes`/`default` naming
    no category of the axis, and patterns that do not compile or can backtrack catastrophically.
    The file is also validated as a model, so anything else `load_taxonomy` would refuse is named.
    """
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        return [yaml_problem(exc)]
    refused = refused_node(root) if root is not None else None
    if refused is not None:
        return [Problem(_line(refused[0]), refused[1])]
    if not isinstance(root, yaml.MappingNode):
        return [Problem(1, "a taxonomy is a mapping with 'name' and 'axes'")]
    problems: list[Problem] = []
    if not _scalar(_mapping_get(root, "name")):
        problems.append(Problem(1, "the taxonomy has no 'name'"))
    axes_node = _mapping_get(root, "axes")
    axes = _sequence(axes_node)
    if not axes:
        problems.append(Problem(_line(axes_node) or 1, "the taxonomy has no axes"))
    if len(axes) > MAX_AXES:
        problems.append(Problem(_line(axes_node), f"{len(axes)} axes; kia handles 1 to {MAX_AXES}"))
    seen_axes: dict[str, int] = {}
    seen_categories: dict[str, int] = {}
    for axis_node in axes:
        axis_id = _scalar(_mapping_get(axis_node, "id"))
        where = _line(axis_node)
        if not axis_id:
            problems.append(Problem(where, "an axis without an 'id'"))
        elif axis_id in seen_axes:
            problems.append(Problem(where, f"duplicate axis id {axis_id!r} (first on line {seen_axes[axis_id]})"))
        else:
            seen_axes[axis_id] = where
        if not _scalar(_mapping_get(axis_node, "definition")):
            problems.append(Problem(where, f"axis {axis_id!r} has no definition"))
        categories_node = _mapping_get(axis_node, "categories")
        categories = _sequence(categories_node)
        if not categories:
            problems.append(Problem(_line(categories_node) or where, f"axis {axis_id!r} has no categories"))
        ids_here = [_scalar(_mapping_get(c, "id")) for c in categories]
        for category_node, category_id in zip(categories, ids_here, strict=True):
            line = _line(category_node)
            if not category_id:
                problems.append(Problem(line, f"a category of axis {axis_id!r} without an 'id'"))
                continue
            if category_id in seen_categories:
                problems.append(
                    Problem(
                        line, f"duplicate category id {category_id!r} (first on line {seen_categories[category_id]})"
                    )
                )
            else:
                seen_categories[category_id] = line
            if not _scalar(_mapping_get(category_node, "definition")):
                problems.append(Problem(line, f"category {category_id!r} has no definition"))
            for relation in ("implies", "excludes"):
                for target in _sequence(_mapping_get(category_node, relation)):
                    if _scalar(target) not in ids_here:
                        problems.append(
                            Problem(
                                _line(target),
                                f"{category_id} {relation} {_scalar(target)!r}, "
                                f"which is no category of axis {axis_id!r}",
                            )
                        )
            for pattern_node in _sequence(_mapping_get(category_node, "patterns")):
                for severity, message in check_pattern(_scalar(pattern_node)):
                    problems.append(Problem(_line(pattern_node), f"{category_id}: {message}", severity))
        default_node = _mapping_get(axis_node, "default")
        if _scalar(default_node) and _scalar(default_node) not in ids_here:
            problems.append(
                Problem(_line(default_node), f"default {_scalar(default_node)!r} is no category of axis {axis_id!r}")
            )
    if not any(p.severity == "error" for p in problems):
        try:
            Taxonomy.model_validate(_parse_yaml(text))
        except yaml.YAMLError as exc:  # a tag the safe loader refuses (!!python/object...)
            problems.append(yaml_problem(exc))
        except ValidationError as exc:
            problems.extend(validation_problems(root, exc))
    return sorted(problems, key=lambda p: p.line)


def _node_at(root: Any, loc: Sequence[int | str]) -> Any:
    """The deepest YAML node on the path `loc` (a pydantic error location): the key itself for a key
    that should not be there, its mapping for a key that is missing."""
    node = root
    for index, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            found = next(
                ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None
            )
            if found is None:
                return node
            node = found[0] if index == len(loc) - 1 else found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def validation_problems(root: Any, exc: ValidationError) -> list[Problem]:
    """Every validation error of a taxonomy, each on the line of the YAML node it is about (a
    misspelt key such as `mutli:` is named where it stands, with all the others)."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        node = _node_at(root, error["loc"]) if root is not None else None
        problems.append(Problem(_line(node), f"{where or 'top level'}: {error['msg']}"))
    return problems


def check_taxonomy_file(path: str | os.PathLike[str] | None) -> list[Problem]:
    """`check_taxonomy_text` of a file (default: the shipped taxonomy)."""
    resolved = resolve_taxonomy_path(path)
    return check_taxonomy_text(read_user_text(resolved, "taxonomy file", TaxonomyError))


def load_checked_taxonomy(path: str | os.PathLike[str] | None = None) -> Taxonomy:
    """`load_taxonomy` after `check_taxonomy_file`: what `propose` reads, so a pattern that can
    hang the classifier or an `implies` to nowhere stops the run before it starts."""
    errors = [p for p in check_taxonomy_file(path) if p.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more; see `kia taxonomy check`)" if len(errors) > 1 else ""
        raise TaxonomyError(errors[0].render(resolve_taxonomy_path(path)) + more)
    return load_taxonomy(path)


def cells(taxonomy: Taxonomy) -> int:
    """How many cells the design space has (the product of the axes' sizes)."""
    size = 1
    for axis in taxonomy.axes:
        size *= len(axis.categories)
    return size


def all_cells(taxonomy: Taxonomy) -> itertools.product[tuple[str, ...]]:
    """Every cell of the design space, one category per axis, in file order."""
    return itertools.product(*(axis.category_ids for axis in taxonomy.axes))
