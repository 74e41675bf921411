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


def parse(text: str) -> Any:
    """YAML's safe subset, parsed by libyaml where PyYAML has it (10x faster than pure Python: every
    command that opens a run reads its taxonomy, and `kia serve` should start in under 2 s).

    An alias (`*name`) is refused before anything is built from the file (`refused_node`): a 200 KB
    file that repeats one 100 KB anchored string 25,000 times expands to gigabytes of cues."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        refused = refused_node(node)
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
            return node, f"the YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is refused (plain YAML only)"
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in reversed(node.value) for part in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return None
