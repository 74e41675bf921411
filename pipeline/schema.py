"""The response schema every backend's answer must validate against, built from the taxonomy.

Shared by `propose` (validating any backend's answer) and the LLM backends (structured output), so
neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model, model_validator

from kia.backends import BackendAnswer, ClaimedLabel
from kia.errors import ProposalValidationError
from kia.taxonomy import Taxonomy

MAX_QUOTES = 3
MAX_QUOTE_CHARS = 300


Quote = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUOTE_CHARS)]


class _ProposalBase(BaseModel):
    """Checks shared by every taxonomy's response model."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_category_twice(self) -> _ProposalBase:
        for axis, labels in self:
            seen = [label.category for label in labels]
            if len(seen) != len(set(seen)):
                raise ValueError(f"axis {axis} lists a category twice: {seen}")
        return self


@lru_cache(maxsize=8)
def _response_model_cached(taxonomy_json: str, allow_empty: bool) -> type[BaseModel]:
    taxonomy = Taxonomy.model_validate_json(taxonomy_json)
    fields: dict[str, Any] = {}
    for axis in taxonomy.axes:
        allowed = tuple(axis.category_ids)
        label_fields: dict[str, Any] = {
            "category": (Literal[allowed], Field(description=f"one of {', '.join(allowed)}")),
            "evidence": (
                list[Quote],
                Field(min_length=1, max_length=MAX_QUOTES, description="verbatim quotes from the paper"),
            ),
            "rationale": (str, Field(max_length=200)),
            "confidence": (float, Field(ge=0.0, le=1.0)),
        }
        label_model = create_model(f"Label{axis.id}", __config__=ConfigDict(extra="forbid"), **label_fields)
        fields[axis.id] = (
            list[label_model],  # type: ignore[valid-type]
            Field(
                min_length=0 if allow_empty else 1,
                # A single-label axis (`multi: false`) takes exactly one category.
                max_length=len(allowed) if axis.multi else 1,
                description=f"{axis.name}: {axis.question}" + ("" if axis.multi else " (exactly one category)"),
            ),
        )
    return create_model("TaxonomyProposal", __base__=_ProposalBase, **fields)


def response_model(taxonomy: Taxonomy, allow_empty: bool = False) -> type[BaseModel]:
    """The pydantic model every backend's answer must validate against.

    Per axis, a non-empty list of labels (exactly one on an axis with `multi: false`), each a
    category of that axis (anything else is a
    validation error) with 1-3 bounded quotes, a short rationale and a confidence in [0, 1].
    Bounds keep small models from looping. `allow_empty` admits an empty axis: a backend that
    abstains (an `unclear` axis, an out-of-scope paper) says why beside the labels.
    """
    return _response_model_cached(taxonomy.model_dump_json(), allow_empty)


class _AbstainingBase(BaseModel):
    """Checks of the LLM-facing answer: an axis is labelled, or says why not."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _labelled_or_unclear(self) -> _AbstainingBase:
        problems: list[str] = []
        in_scope = bool(getattr(self, "in_scope", True))
        for name, value in self:
            if not isinstance(value, BaseModel) or not hasattr(value, "labels"):
                continue
            labels, unclear = value.labels, (value.unclear or "").strip()  # type: ignore[attr-defined]
            seen = [label.category for label in labels]
            if len(seen) != len(set(seen)):
                problems.append(f"axis {name} lists a category twice: {seen}")
            # A paper judged out of scope may still carry labels (asked to leave them empty, a model
            # that does not is flagged, not re-asked, not even for their quotes: the paper is stored
            # out of scope and the labels are dropped; see `answer_from_llm`).
            if in_scope and not labels and not unclear:
                problems.append(f"axis {name} has no label and no `unclear` reason (give one of them)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@lru_cache(maxsize=8)
def _llm_response_model_cached(taxonomy_json: str) -> type[BaseModel]:
    taxonomy = Taxonomy.model_validate_json(taxonomy_json)
    labelled = response_model(taxonomy, allow_empty=True)
    fields: dict[str, Any] = {
        "in_scope": (bool, Field(description="false when the paper is outside the survey's scope")),
        "scope_reason": (str, Field(max_length=300, description="one sentence: why the paper is (not) in scope")),
    }
    for axis in taxonomy.axes:
        label_model: Any = labelled.model_fields[axis.id].annotation
        axis_model = create_model(
            f"Axis{axis.id}",
            __config__=ConfigDict(extra="forbid"),
            # A single-label axis (`multi: false`) takes one category at most (none only when unclear);
            # in the JSON schema as maxItems, so a grammar-constrained server cannot send two.
            labels=(label_model, Field(max_length=len(axis.categories) if axis.multi else 1)),
            unclear=(
                str | None,
                Field(max_length=300, description="why no category is supported; null when labelled"),
            ),
        )
        single = "" if axis.multi else " (one category only)"
        fields[axis.id] = (axis_model, Field(description=f"{axis.name}: {axis.question}{single}"))
    return create_model("TaxonomyAnswer", __base__=_AbstainingBase, **fields)


def llm_response_model(taxonomy: Taxonomy) -> type[BaseModel]:
    """The answer an LLM gives: `in_scope` with a reason, and per axis `labels` or an `unclear` reason.

    An empty axis is admitted only with an `unclear` reason (or when the paper is out of scope, where
    every axis is empty); otherwise the answer is invalid and the model is re-asked. Labels are the
    same objects as in `response_model`, so `answer_from_llm` maps them one to one.
    """
    return _llm_response_model_cached(taxonomy.model_dump_json())


def answer_from_llm(payload: dict[str, Any], taxonomy: Taxonomy) -> BackendAnswer:
    """A validated LLM answer (as a dict) mapped into a BackendAnswer (labels, unclear, in_scope)."""
    labels: dict[str, list[ClaimedLabel]] = {}
    unclear: dict[str, str] = {}
    in_scope = bool(payload.get("in_scope", True))
    for axis in taxonomy.axis_ids:
        part = payload.get(axis) or {}
        claims = [
            ClaimedLabel(item["category"], float(item["confidence"]), item["rationale"], list(item["evidence"]))
            for item in part.get("labels") or []
        ]
        if claims and in_scope:
            labels[axis] = claims
        elif in_scope:
            unclear[axis] = (part.get("unclear") or "").strip() or "no reason given"
    return BackendAnswer(
        labels=labels, raw={"scope_reason": payload.get("scope_reason", "")}, unclear=unclear, in_scope=in_scope
    )


def schema_hash(taxonomy: Taxonomy) -> str:
    """sha256 of the response model's JSON schema."""
    schema = response_model(taxonomy).model_json_schema()
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def answer_to_json(answer: BackendAnswer, taxonomy: Taxonomy) -> dict[str, Any]:
    """Validate a backend's labels against the schema and return them as plain JSON.

    Labels for an axis the taxonomy lacks (a plugin's) are refused, naming the axis: dropped, they
    vanished without a word."""
    foreign = [axis for axis, claims in answer.labels.items() if claims and axis not in taxonomy.axis_ids]
    if foreign:
        raise ProposalValidationError(
            f"answer does not fit the taxonomy schema: labels for {', '.join(map(repr, foreign))}, not an axis of"
            f" taxonomy {taxonomy.name} ({', '.join(taxonomy.axis_ids)})"
        )
    # An axis may stay empty with a reason: unclear, or (for a paper judged out of scope) the scope.
    unlabelled = {axis for axis in taxonomy.axis_ids if not answer.labels.get(axis)}
    abstaining = set(answer.unclear) | set(answer.defaults) | (unlabelled if answer.in_scope is False else set())
    payload = {
        axis: [
            {"category": c.category, "evidence": c.quotes, "rationale": c.rationale, "confidence": c.confidence}
            for c in answer.labels.get(axis, [])
        ]
        for axis in taxonomy.axis_ids
    }
    for axis in taxonomy.axis_ids:
        if axis in abstaining and payload[axis]:
            raise ProposalValidationError(f"answer does not fit the taxonomy schema: {axis}: labelled and abstaining")
        if abstaining and axis not in abstaining and not payload[axis]:
            raise ProposalValidationError(f"answer does not fit the taxonomy schema: {axis}: no label, no reason")
    try:
        return response_model(taxonomy, allow_empty=bool(abstaining)).model_validate(payload).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = f"answer does not fit the taxonomy schema: {where}: {first['msg']}{more}"
        raise ProposalValidationError(message) from exc


def labels_from_json(payload: dict[str, Any], taxonomy: Taxonomy) -> dict[str, list[ClaimedLabel]]:
    """Schema-checked JSON back into claimed labels (used for cache hits)."""
    validated = response_model(taxonomy, allow_empty=True).model_validate(payload).model_dump()
    return {
        axis: [
            ClaimedLabel(item["category"], float(item["confidence"]), item["rationale"], list(item["evidence"]))
            for item in validated[axis]
        ]
        for axis in taxonomy.axis_ids
    }
