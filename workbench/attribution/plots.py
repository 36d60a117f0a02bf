"""Figures of the attribute stage: overlay grids and the check results."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _normalise_map(m: np.ndarray) -> np.ndarray:
    """|map| scaled to [0, 1] by its 99th percentile (one hot pixel should not wash out the rest)."""
    m = np.abs(m)
    hi = np.percentile(m, 99) if m.size else 0.0
    return np.clip(m / hi, 0, 1) if hi > 0 else np.zeros_like(m)


def overlay_grid(images: np.ndarray, rows: Sequence[tuple[int, str, dict[str, np.ndarray]]], title: str = ""):
    """Grid: one row per (image index, target label, {method: (C, H, W) attribution}); first column the image.

    ``images``: (N, H, W, 3) floats in [0, 1]. Maps are |channel sum| over a grey copy of the image.
    """
    import matplotlib.pyplot as plt

    methods = list(rows[0][2]) if rows else []
    n_rows, n_cols = max(1, len(rows)), 1 + len(methods)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols + 1.2, 1.6 * n_rows), squeeze=False)
    for r, (i, label, maps) in enumerate(rows):
        img = images[i]
        axes[r, 0].imshow(img)
        axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
        grey = img.mean(-1)
        for c, m in enumerate(methods, start=1):
            heat = _normalise_map(np.asarray(maps[m]).sum(0))
            axes[r, c].imshow(grey, cmap="gray", vmin=0, vmax=1)
            axes[r, c].imshow(heat, cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(m.replace("_", "\n"), fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def target_overlays(images: np.ndarray, stimulus_ids: Sequence[str],
                    rows: Sequence[tuple[str, dict[str, Any]]], n_show: int, title: str = ""):
    """The overlay grid of one stimulus set: for each (target label, {method: Attribution}) the first ``n_show``
    images. ``images``: (N, H, W, 3) in [0, 1] (the preprocessing inverted). None when no target has a map."""
    n_show = min(n_show, len(images))
    grid = [(i, f"{str(stimulus_ids[i])[:14]}\n{label[:28]}", {m: a.attributions[i] for m, a in maps.items()})
            for label, maps in rows if maps for i in range(n_show)]
    if not grid:
        return None
    return overlay_grid(images, grid, title=title)


def checks_figure(checks: dict[str, Any]):
    """Completeness, randomisation cascade, deletion/insertion gains and method agreement in one figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    per_method = checks.get("methods", {})
    names = list(per_method)

    ax = axes[0]
    comp = [(m, per_method[m]["completeness"]["relative_error_median"]) for m in names
            if per_method[m].get("completeness")]
    if comp:
        ax.bar(range(len(comp)), [max(v, 1e-12) for _, v in comp], color="tab:blue")
        ax.set_xticks(range(len(comp)), [m for m, _ in comp], rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.axhline(0.01, color="k", lw=0.8, ls="--")
    ax.set_title("completeness: median |gap| / |f(x)-f(b)|", fontsize=8)

    ax = axes[1]
    randomised = [m for m in names if per_method[m].get("randomisation")]
    for m in randomised:
        rnd = per_method[m]["randomisation"]
        ax.plot(range(1, len(rnd["layers"]) + 1), rnd["spearman_mean"], marker="o", label=m)
        ax.set_xticks(range(1, len(rnd["layers"]) + 1), rnd["layers"], rotation=45, ha="right", fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Spearman vs trained map")
    ax.set_title("cascading randomisation (top-down)", fontsize=8)
    if randomised:
        ax.legend(fontsize=6)

    ax = axes[2]
    faith = [(m, per_method[m]["faithfulness"]) for m in names if per_method[m].get("faithfulness")]
    if faith:
        idx = np.arange(len(faith))
        ax.bar(idx - 0.2, [f["deletion_gain"] for _, f in faith], 0.4, label="deletion: random - map")
        ax.bar(idx + 0.2, [f["insertion_gain"] for _, f in faith], 0.4, label="insertion: map - random")
        ax.set_xticks(idx, [m for m, _ in faith], rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=6)
    ax.set_title("faithfulness: AUC gain over random order (>0 good)", fontsize=8)

    ax = axes[3]
    agree = checks.get("agreement")
    if agree:
        mat = np.asarray(agree["spearman_mean"])
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(agree["methods"])), agree["methods"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(agree["methods"])), agree["methods"], fontsize=7)
        for (a, b), v in np.ndenumerate(mat):
            ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("agreement between methods (Spearman)", fontsize=8)
    fig.suptitle(f"checks on target: {checks.get('target', '')}", fontsize=9)
    fig.tight_layout()
    return fig
