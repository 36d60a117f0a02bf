"""Figures of the synthesize stage: per target, the synthesised images next to the best natural images, each with
its predicted drive under the same norm budget."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np


@dataclass
class SynthesisRow:
    label: str
    synthetic: np.ndarray                  # (n_seeds, H, W, 3) in [0, 1]
    synthetic_values: np.ndarray
    natural: np.ndarray                    # (k, H, W, 3) in [0, 1], best first
    natural_values: np.ndarray
    natural_ids: list[str]
    held_out_values: np.ndarray | None = None  # the held-out readout's drive of the synthetic images


def synthesis_figure(rows: list[SynthesisRow], title: str):
    """One row per target: synthetic images (drive, and held-out drive for neural sites), then natural ones."""
    import matplotlib.pyplot as plt

    n_cols = max(len(r.synthetic) + len(r.natural) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols + 0.4, 1.9 * len(rows) + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        for j, image in enumerate(row.synthetic):
            held = "" if row.held_out_values is None else f"\nheld-out {row.held_out_values[j]:.3g}"
            _show(axes[i, j], image, f"synth {row.synthetic_values[j]:.3g}{held}", "tab:red")
        for j, image in enumerate(row.natural):
            _show(axes[i, len(row.synthetic) + j], image, f"{row.natural_ids[j]}\n{row.natural_values[j]:.3g}",
                  "0.3")
        axes[i, 0].text(-0.08, 0.5, textwrap.fill(row.label, 24), transform=axes[i, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=6)
    fig.suptitle(textwrap.fill(title, 110), fontsize=8)
    fig.subplots_adjust(left=0.4 / (1.6 * n_cols + 0.4) + 0.04, right=0.99, bottom=0.02,
                        top=1 - 0.8 / fig.get_figheight(), wspace=0.1, hspace=0.55)
    return fig


def _show(ax, image: np.ndarray, text: str, colour: str) -> None:
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    ax.set_title(text, fontsize=6, color=colour)
