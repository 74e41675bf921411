"""Plots with matplotlib (PNG and SVG): the survey's Figure 2 from any labeling, and agreement heatmaps."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

from kia.labelings import Labeling  # noqa: E402
from kia.score import Agreement
from kia.stats import design_space  # noqa: E402
from kia.taxonomy import Taxonomy  # noqa: E402

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _save(fig: plt.Figure, out_dir: Path, stem: str, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write the figure in each format (PNG for reports, SVG for papers) and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(panels: int, columns: int) -> int:
    return max(1, -(-panels // columns))


def figure2(
    labeling: Labeling, taxonomy: Taxonomy, out_dir: Path, title: str = "", formats: tuple[str, ...] = ("png", "svg")
) -> list[Path]:
    """The survey's Figure 2 for any taxonomy of 1 to 6 axes. First rows: each axis's category shares
    and single- vs multi-label use. Then one bubble chart per pair of axes (node size the number of
    methods in the cell, empty cells left blank), its pie slices the distribution on a third axis
    where the taxonomy has one. Panels wrap at four per row."""
    stats = design_space(labeling, taxonomy)
    axes_ids = taxonomy.axis_ids
    pairs = list(itertools.combinations(axes_ids, 2))
    top_panels = len(axes_ids) + 1
    columns = min(4, max(top_panels, len(pairs), 1))
    top_rows, pair_rows = _grid(top_panels, columns), (_grid(len(pairs), columns) if pairs else 0)
    fig, grid = plt.subplots(
        top_rows + pair_rows, columns, figsize=(4.2 * columns, 4.2 * (top_rows + pair_rows)), squeeze=False
    )
    panels = [ax for row in grid for ax in row]
    top, bottom = panels[: top_rows * columns], panels[top_rows * columns :]
    for ax, axis_id in zip(top, axes_ids, strict=False):
        categories = taxonomy.axis(axis_id).category_ids
        shares = [100 * stats.shares[axis_id][c] for c in categories]
        ax.bar(range(len(categories)), shares, color=[PALETTE[i % len(PALETTE)] for i in range(len(categories))])
        ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0, fontsize=8)
        for x, share in enumerate(shares):
            ax.text(x, share + 1, f"{share:.0f}%", ha="center", fontsize=8)
        kind = "" if taxonomy.axis(axis_id).multi else " (single-label)"
        ax.set_title(f"{axis_id}: {taxonomy.axis(axis_id).name}{kind}", fontsize=10)
        ax.set_ylabel("share of labels (%)")
        ax.set_ylim(0, max(shares + [10]) * 1.2)
    ax = top[len(axes_ids)]
    singles = [stats.single_multi[a]["single"] for a in axes_ids]
    multis = [stats.single_multi[a]["multi"] for a in axes_ids]
    positions = range(len(axes_ids))
    ax.bar([p - 0.2 for p in positions], singles, width=0.4, label="single", color=PALETTE[0])
    ax.bar([p + 0.2 for p in positions], multis, width=0.4, label="multiple", color=PALETTE[1])
    ax.set_xticks(list(positions), axes_ids, fontsize=8)
    ax.set_title("categories per method")
    ax.set_ylabel("methods")
    ax.legend()
    for ax in top[top_panels:]:
        ax.axis("off")

    for ax, (first, second) in zip(bottom, pairs, strict=False):
        third = next((a for a in axes_ids if a not in (first, second)), None)
        xs, ys = taxonomy.axis(first).category_ids, taxonomy.axis(second).category_ids
        third_ids = taxonomy.axis(third).category_ids if third else []
        biggest = max(stats.cooccurrence[f"{first}-{second}"].values(), default=0) or 1
        for (xi, a), (yi, b) in itertools.product(enumerate(xs), enumerate(ys)):
            members = [p for p in labeling.values() if a in p.get(first, ()) and b in p.get(second, ())]
            if not members:
                continue
            radius = 0.12 + 0.33 * (len(members) / biggest) ** 0.5
            if third is None:
                ax.add_patch(Wedge((xi, yi), radius, 0, 360, color=PALETTE[0]))
            else:
                slices = Counter(c for p in members for c in p.get(third, ()))
                start, total = 90.0, sum(slices.values()) or 1
                for index, category in enumerate(third_ids):
                    if not slices[category]:
                        continue
                    sweep = 360.0 * slices[category] / total
                    ax.add_patch(Wedge((xi, yi), radius, start, start + sweep, color=PALETTE[index % len(PALETTE)]))
                    start += sweep
            ax.text(xi, yi, str(len(members)), ha="center", va="center", fontsize=8, color="white", weight="bold")
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_ylim(-0.6, len(ys) - 0.4)
        ax.set_xticks(range(len(xs)), xs, rotation=30 if len(xs) > 4 else 0, fontsize=8)
        ax.set_yticks(range(len(ys)), ys, fontsize=8)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{first}-{second}" + (f" (slices: {third})" if third else ""), fontsize=10)
        if third:
            handles = [Wedge((0, 0), 0.1, 0, 360, color=PALETTE[i % len(PALETTE)]) for i in range(len(third_ids))]
            ax.legend(handles, third_ids, fontsize=7, loc="upper right", framealpha=0.6)
    for ax in bottom[len(pairs) :]:
        ax.axis("off")
    fig.suptitle(title or f"Design space of {stats.n_papers} methods")
    fig.tight_layout()
    return _save(fig, out_dir, "design-space", formats)


def agreement_heatmap(agreement: Agreement, out_dir: Path, title: str = "") -> list[Path]:
    """Per category (rows) precision, recall and F1 on a 0-1 scale, and kappa, PABAK and AC1 on a
    -1-1 scale whose middle is chance: two panels, each with its own colour bar, so a precision of 0
    reads red, not the neutral colour of a chance-level kappa. Undefined cells are grey, marked n/a."""
    import numpy as np

    groups = [
        (["precision", "recall", "f1"], 0.0, 1.0, "0 = none right, 1 = all right"),
        (["kappa", "pabak", "ac1"], -1.0, 1.0, "0 = chance, 1 = perfect, < 0 = worse than chance"),
    ]
    rows: list[str] = []
    figures_per_row: list[dict[str, object]] = []
    for axis_agreement in agreement.axes.values():
        for category, figures in axis_agreement.per_category.items():
            rows.append(category)
            figures_per_row.append(figures)
    fig, panels = plt.subplots(1, 2, figsize=(9, 0.38 * max(4, len(rows)) + 1.4))
    if not rows:
        for panel in panels:
            panel.axis("off")
        panels[0].text(0.5, 0.5, "no papers in common: nothing to compare", ha="center", va="center")
        return _save(fig, out_dir, "agreement")
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="lightgrey")
    for panel, (metrics, low, high, meaning) in zip(panels, groups, strict=True):
        values = np.array(
            [[np.nan if f[m] is None else float(f[m] or 0.0) for m in metrics] for f in figures_per_row]  # type: ignore[arg-type]
        )
        image = panel.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high, aspect="auto")
        panel.set_xticks(range(len(metrics)), metrics)
        panel.set_yticks(range(len(rows)), rows)
        for r, c in itertools.product(range(len(rows)), range(len(metrics))):
            value = values[r][c]
            panel.text(c, r, "n/a" if value != value else f"{value:.2f}", ha="center", va="center", fontsize=7)
        bar = fig.colorbar(image, ax=panel, shrink=0.7)
        bar.set_label(meaning, fontsize=7)
    fig.suptitle(title or "agreement per category")
    fig.tight_layout()
    return _save(fig, out_dir, "agreement")
