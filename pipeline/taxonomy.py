"""Stage: the taxonomy as data. A validated model of any survey's axes and categories.

The default is the survey's K x I x A taxonomy shipped in `labels/taxonomy.yaml`; `--taxonomy FILE`
points at any other file of the same shape, so nothing downstream hard-codes K, I or A.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kia.errors import TaxonomyError
from kia.resources import default_taxonomy_path


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
    def compiled_patterns(self) -> list[re.Pattern[str]]:
        """The patterns, compiled case-insensitively (once per category)."""
        return [re.compile(p, re.IGNORECASE) for p in self.patterns]

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
    axes: list[Axis] = Field(min_length=1)

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
        """sha256 of the canonical JSON form, stored with each run."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

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


def resolve_taxonomy_path(option: str | os.PathLike[str] | None) -> Path:
    """The file given (the CLI passes `--taxonomy`, else the settings' `$KIA_TAXONOMY`), else the
    shipped K x I x A file."""
    return Path(option) if option else default_taxonomy_path()


def load_taxonomy(path: str | os.PathLike[str] | None = None) -> Taxonomy:
    """Read and validate a taxonomy YAML file; one-line TaxonomyError naming the file otherwise."""
    resolved = resolve_taxonomy_path(path)
    try:
        raw = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TaxonomyError(f"{resolved}: taxonomy file not found") from exc
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{resolved}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{resolved}: a taxonomy is a mapping with 'name' and 'axes'")
    try:
        return Taxonomy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TaxonomyError(f"{resolved}: invalid taxonomy at {where or 'top level'}: {first['msg']}") from exc
