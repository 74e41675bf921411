"""`kia init DIR`: the files a new survey starts from, so any survey's taxonomy is data from day one.

Writes a commented taxonomy skeleton (two axes: one multi-label, one single-label, every field
explained), an empty gold CSV whose columns follow that skeleton, and a short README of the
format. The skeleton passes `kia taxonomy check` as written.
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
scope: >-
  One paragraph on what papers the survey covers (used to rank candidate papers by closeness).
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
    default: images                  # optional: the label when a paper gives no evidence on this axis
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

Then:

    kia ingest papers/ --db survey.duckdb
    kia propose --taxonomy taxonomy.yaml --db survey.duckdb
    kia review --db survey.duckdb          # or: kia label KEY --set data=volumes
    kia score --gold gold.csv --db survey.duckdb
    kia stats --gold gold.csv --taxonomy taxonomy.yaml --plots plots/
    kia export --format latex --run RUN --group-by data --db survey.duckdb
    kia report --gold gold.csv --db survey.duckdb

Every command on a run uses the taxonomy that run recorded, so one database can hold runs of
several surveys; mixing two taxonomies stops with one line naming both.
"""


def gold_header(axis_ids: list[str]) -> str:
    """The gold CSV's header line for these axes."""
    return ",".join(["method", "arxiv_id", "title", *axis_ids]) + "\n"


def write_skeleton(directory: Path, force: bool = False) -> list[Path]:
    """Write taxonomy.yaml, gold.csv and README.md into `directory` (created); never overwrite
    unless `force`."""
    files = {  # the gold columns follow the skeleton's axes (family, data)
        "taxonomy.yaml": TAXONOMY,
        "gold.csv": gold_header(["family", "data"]),
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
