"""`kia init DIR`: the files a new survey starts from, so any survey's taxonomy is data from day one.

Writes the project file kia.toml (every command run in DIR or below reads its database, taxonomy,
gold, reviewer, backend and arXiv query, so no option is repeated), a commented taxonomy skeleton
(two axes: one multi-label, one single-label, every field explained), an empty gold CSV whose
columns follow that skeleton, and a short README of the format. The skeleton passes `kia taxonomy check` as written.
"""

from __future__ import annotations

from pathlib import Path

from kia.errors import KiaError

TAXONOMY = """\
# A survey's taxonomy for kia. Check it with `kia taxonomy check taxonomy.yaml`.
# Every paper gets labels on every axis; 1 to 6 axes; ids are letters, digits, '_' or '-',
# unique across the whole file.
name: my-survey                      # short name, stored with every run
title: My Survey (Method x Data)     # shown in reports and exports
source: "My Survey, Section 3, Table 2"
# What the survey covers, in a paragraph: kia flags a paper far from it as out of scope (with the
# sentence that says what the paper does) and ranks arXiv candidates by closeness to it.
scope: >-
  Deep generative models (adversarial networks, diffusion models) that synthesise medical images
  or volumes, and the data they are trained on.
# Phrases that contain a cue word but are no evidence for anything (removed before cue matching).
ignore_phrases: []
axes:
  - id: family                       # the column name of this axis in the gold CSV
    name: Method family
    question: Which family of methods does the paper propose?
    definition: >-
      The kind of model the paper proposes.
    multi: true                      # true: one or more categories per paper
    categories:
      - id: gan
        name: Adversarial
        definition: >-
          A generator trained against a discriminator.
        instantiations: [conditional GAN, StyleGAN]   # examples the survey names
        cues: [adversarial, discriminator, GAN]       # generic phrases a paper of this kind uses
        patterns: []                 # regular expressions (RE2 syntax is safest), matched per sentence
        excludes: []                 # categories of this axis that cannot hold together with this one
        implies: []                  # categories of this axis this one needs by definition
      - id: diffusion
        name: Diffusion
        definition: >-
          A model that learns to reverse a gradual noising process.
        instantiations: [DDPM, latent diffusion]
        cues: [diffusion, denoising, score-based]
  - id: data
    name: Training data
    question: What data is the model trained on?
    definition: >-
      The modality of the training data.
    multi: false                     # false: exactly one category per paper
    default: images                  # optional: what a paper silent on this axis gets (no quote, status default)
    categories:
      - id: images
        name: Images
        definition: >-
          Two-dimensional images.
        cues: [image, images]
      - id: volumes
        name: Volumes
        definition: >-
          Three-dimensional volumes.
        cues: [volume, volumetric, 3D]
"""


README = """\
# Survey files for kia

- `taxonomy.yaml`: the axes and categories (see the comments in the file). `kia taxonomy check
  taxonomy.yaml` reports duplicate ids, empty axes, unknown ids in `implies`/`excludes`, missing
  definitions and patterns that can hang the classifier, each with its line, and prints the table.
- `gold.csv`: the survey's classification table, one row per paper: `method` (the name the paper
  is known by; a stored paper whose key is this name or its `arxiv_id` is matched), `arxiv_id`,
  `title`, then one column per axis id holding category ids joined by `;` (exactly one id on an
  axis with `multi: false`). An unknown id is an error naming its row and column.

- `kia.toml`: this project's settings (database, taxonomy, gold, reviewer, backend, model, arXiv
  query). Every kia command run in this folder or below reads it; `kia config` shows what is in
  force and where each value came from (an environment variable or an option beats the file).

Then, in this folder:

    kia ingest papers/                     # or: kia ingest --bib library.bib
    kia propose                            # the latest complete run is every later command's default
    kia review                             # or: kia label KEY --set data=volumes
    kia score
    kia stats --run latest --plots plots/
    kia export --format latex --group-by data
    kia report

Every command on a run uses the taxonomy that run recorded, so one database can hold runs of
several surveys; mixing two taxonomies stops with one line naming both.
"""


PROJECT = """\
# kia project file: every kia command run in this folder (or below it) reads these settings.
# `kia config` shows what is in force and where each value came from. Relative paths are
# relative to this file's folder. An environment variable (KIA_DB, KIA_TAXONOMY, KIA_MODEL,
# KIA_REVIEWER, ...) or a command-line option beats a value here. Keys never go in this file.
db = "kia.duckdb"
taxonomy = "taxonomy.yaml"
gold = "gold.csv"
# reviewer = "your name"             # default: $KIA_REVIEWER, else your login name
# backend = "local"                  # default: openai when a model or endpoint is set, else local (offline)
# model = "gpt-4o-mini"              # an OpenAI-compatible model; its endpoint: base_url = "http://..."
arxiv_query = ""                     # `kia discover` / `kia batch` search terms
# arxiv_category = "cs.CV"
"""


def gold_header(axis_ids: list[str]) -> str:
    """The gold CSV's header line for these axes."""
    return ",".join(["method", "arxiv_id", "title", *axis_ids]) + "\n"


def write_skeleton(directory: Path, force: bool = False, taxonomy_from: str | None = None) -> list[Path]:
    """Write kia.toml, taxonomy.yaml, gold.csv and README.md into `directory` (created); never
    overwrite unless `force`. `taxonomy_from` starts the project from an existing taxonomy instead
    of the skeleton: a YAML file, or `shipped` for the 3D-CT survey kia ships (checked first; the
    gold CSV's columns are its axes)."""
    from kia.taxonomy import load_taxonomy, resolve_taxonomy_path

    text, axes = TAXONOMY, ["family", "data"]  # the skeleton's axes
    if taxonomy_from is not None:
        source = None if taxonomy_from == "shipped" else taxonomy_from
        loaded = load_taxonomy(source)  # a taxonomy that does not load is one line, before any file is written
        text, axes = resolve_taxonomy_path(source).read_text(encoding="utf-8"), list(loaded.axis_ids)
    files = {
        "kia.toml": PROJECT,
        "taxonomy.yaml": text,
        "gold.csv": gold_header(axes),
        "README.md": README,
    }
    existing = [name for name in files if (directory / name).exists()]
    if existing and not force:
        raise KiaError(f"{directory}: {', '.join(existing)} exist already; pass --force to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
        written.append(directory / name)
    return written
