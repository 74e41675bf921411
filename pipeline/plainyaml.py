"""Plain YAML, for every file kia reads YAML from that someone else may have written: a taxonomy,
and a Markdown paper's front matter (paper text is untrusted).

Why: YAML's safe loader still expands aliases, so a 200 KB file that repeats one anchored 100 KB
string 25,000 times becomes gigabytes in memory, and it names an unsafe tag only as a construction
error. `parse` composes the document first and refuses both before anything is built.
"""

from __future__ import annotations

from typing import Any

import yaml

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RefusedYAMLError(yaml.MarkedYAMLError):
    """YAML that parses but that kia refuses (an alias, an unsafe tag); `problem` says which."""


def parse(text: str, max_expanded: int | None = None) -> Any:
    """YAML's safe subset, parsed by libyaml where PyYAML has it (10x faster than pure Python: every
    command that opens a run reads its taxonomy, and `kia serve` should start in under 2 s).

    An alias (`*name`) is refused before anything is built from the file (`refused_node`): a 200 KB
    file that repeats one 100 KB anchored string 25,000 times expands to gigabytes of cues. Given
    `max_expanded`, aliases are allowed as long as the document would expand to at most that many
    characters of text (`oversized_node`): a paper's front matter may reuse an author list, never
    blow up; unsafe tags are refused either way."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        refused = refused_node(node) if max_expanded is None else oversized_node(node, max_expanded)
        if refused is not None:
            raise RefusedYAMLError(problem=refused[1], problem_mark=refused[0].start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def refused_node(root: Any) -> tuple[Any, str] | None:
    """The first node of a composed YAML document that kia refuses to build, and why: one reached
    twice (an alias, `*name`, which repeats its anchor's text wherever it is used, so a small file
    can expand to gigabytes; a taxonomy writes its text out), or one with a tag the safe loader
    refuses (`!!python/object/apply:...`), named as such rather than as a missing field."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return node, (
                "the text anchored here is repeated by a YAML alias (*name); aliases are refused:"
                " write the text out where it is used"
            )
        seen.add(id(node))
        if node.tag not in yaml.SafeLoader.yaml_constructors:
            return node, _tag_refused(node)
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in reversed(node.value) for part in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return None


def oversized_node(root: Any, max_expanded: int) -> tuple[Any, str] | None:
    """The root when expanding the document's aliases would add more than `max_expanded` to it, or
    the first node with a refused tag; else None. Size is characters of scalar text plus one per
    node (an empty list is no free lunch: nine lines of aliases to empty lists expand to 10^9 of
    them), counted on the composed graph with each node's size computed once, so a bomb is refused
    in microseconds; an alias cycle counts as too large. A long text without aliases is its own
    size and is never refused: only the repetition aliases bring is. Merge keys (`<<: *base`) are
    allowed, since they are what small aliases are mostly for."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def own(node: Any) -> int:
        return 1 if isinstance(node, yaml.MappingNode | yaml.SequenceNode) else len(str(node.value)) + 1

    written = sum(own(node) for node in _distinct_nodes(root))
    limit = written + max_expanded + 1  # any node this large already repeats too much: stop counting

    def size(node: Any) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in visiting:  # a recursive alias: no finite expansion
            return limit
        if node.tag not in yaml.SafeLoader.yaml_constructors and node.tag != _MERGE:
            raise _Refused(node, _tag_refused(node))
        visiting.add(id(node))
        total = own(node)
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        visiting.discard(id(node))
        sizes[id(node)] = total = min(total, limit)
        return total

    try:
        expanded = size(root)
    except _Refused as refused:
        return refused.node, refused.why
    if expanded - written > max_expanded:
        return root, f"the YAML's aliases (*name) repeat over {max_expanded:,} characters"
    return None


_MERGE = "tag:yaml.org,2002:merge"


def _distinct_nodes(root: Any) -> list[Any]:
    """Every node of the composed graph once (what the file writes out, aliases not repeated)."""
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return list(seen.values())


def _tag_refused(node: Any) -> str:
    """Why a node whose tag the safe loader lacks (`!!python/object/apply:...`) is refused."""
    return f"the YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is refused (plain YAML only)"


class _Refused(Exception):
    """A node `oversized_node` refuses, and why."""

    def __init__(self, node: Any, why: str) -> None:
        super().__init__(why)
        self.node, self.why = node, why
