"""Files that ship inside the package (taxonomy, gold, prompts, examples, the local head).

They live in the repository's `labels/`, `prompts/` and `corpus/examples/` folders and are mapped
into the package as `kia.labels`, `kia.prompts` and `kia.examples` by the build backend, so an
installed wheel reads them with `importlib.resources`, never from a path next to a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(package: str, name: str = "") -> Path:
    """The path of a file (or, with no name, the folder) shipped in `package` (e.g. `kia.labels`).

    Wheels install unpacked, so the resource is a real file on disk.
    """
    root = files(package)
    return Path(str(root.joinpath(name) if name else root))


def default_taxonomy_path() -> Path:
    """The survey's K x I x A taxonomy."""
    return shipped("kia.labels", "taxonomy.yaml")


def default_gold_path() -> Path:
    """The survey's Table 5."""
    return shipped("kia.labels", "table5.csv")


def default_prompt_path() -> Path:
    """The classification prompt template."""
    return shipped("kia.prompts", "classify.md")


def survey_reported_path() -> Path:
    """The shares the survey's text reports (checked against its table by `kia stats`)."""
    return shipped("kia.labels", "survey_reported.yaml")


def examples_dir() -> Path:
    """The self-written example documents of `kia demo`."""
    return shipped("kia.examples")


def examples_gold_path() -> Path:
    """The labels of the example documents."""
    return shipped("kia.labels", "examples.csv")


def source_checkout() -> Path | None:
    """The git checkout kia runs from, if it runs from one (None when installed from a wheel)."""
    here = Path(__file__).resolve().parent
    if "site-packages" in here.parts or "dist-packages" in here.parts:
        return None
    return here.parent if (here.parent / ".git").exists() else None
