"""Figures of the intervene stage: lesion-size curves per category and the lesioned region on the selectivity map."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

KIND_STYLE = {
    "disk_peak": ("tab:red", "-", "disk at selectivity peak"),
    "top_k": ("tab:purple", "-", "most selective units"),
    "random": ("0.35", "--", "random units (mean, min-max)"),
    "random_disk": ("tab:olive", "--", "random disk (mean, min-max)"),
}


def lesion_curves_figure(fractions: Sequence[float], curves: Mapping[str, Mapping[str, Any]],
                         measures: Sequence[tuple[str, str]]):
    """One column per category, one row per measure.

    curves[category][measure][kind] = array (n_sizes,) for selective kinds, (n_controls, n_sizes) for controls.
    measures: (key, y-axis label) pairs.
    """
    import matplotlib.pyplot as plt

    categories = list(curves)
    rows = [(key, label) for key, label in measures
            if any(key in curves[c] and curves[c][key] for c in categories)]
    fig, axes = plt.subplots(len(rows), len(categories), figsize=(3.4 * len(categories), 2.8 * len(rows)),
                             squeeze=False, sharex=True)
    x = 100 * np.asarray(fractions, dtype=float)
    for j, cat in enumerate(categories):
        for i, (key, label) in enumerate(rows):
            ax = axes[i, j]
            data = curves[cat].get(key) or {}
            if not data:
                ax.text(0.5, 0.5, "not measured\n(no matching classes)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                ax.set_xticks(x)
            for kind, values in data.items():
                color, ls, name = KIND_STYLE.get(kind, ("k", "-", kind))
                v = np.asarray(values, dtype=float)
                if v.ndim == 2:
                    ax.fill_between(x, v.min(0), v.max(0), color=color, alpha=0.2, lw=0)
                    v = v.mean(0)
                ax.plot(x, v, ls, color=color, marker="o", ms=3, label=name)
            ax.axhline(0, color="0.7", lw=0.8)
            if i == 0:
                ax.set_title(cat)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("lesion size (% of layer units)")
    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.02 * (len(rows) == 1)))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def lesion_map_figure(selectivity: Mapping[str, np.ndarray], lesions: Mapping[str, Mapping[str, Any]],
                      positions: np.ndarray | None, unit_shape: Sequence[int], layer: str):
    """Selectivity (d') map per category with the lesioned units drawn on it.

    With a cortical sheet: every unit at its sheet position, coloured by d'; the selective disk's units outlined
    (and its effective radius as a circle), a random disk of the same size in grey. Without a sheet: d' as a
    channel x (row*column) image, the most-selective lesion marked.
    lesions[category] = {"selective": Selection, "control": Selection | None}.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    cats = list(selectivity)
    fig, axes = plt.subplots(1, len(cats), figsize=(3.8 * len(cats), 3.6), squeeze=False)
    for ax, cat in zip(axes[0], cats):
        d = np.asarray(selectivity[cat], dtype=float)
        lim = float(np.nanpercentile(np.abs(d), 99)) or 1.0
        sel = lesions[cat].get("selective")
        ctl = lesions[cat].get("control")
        if positions is not None:
            size = max(1.0, 0.8 * (200.0 / np.sqrt(len(d))) ** 2)
            im = ax.scatter(positions[:, 0], positions[:, 1], c=d, s=size, cmap="RdBu_r", vmin=-lim, vmax=lim,
                            linewidths=0)
            for s, color in ((sel, "k"), (ctl, "0.45")):
                if s is None:
                    continue
                ax.scatter(positions[s.units, 0], positions[s.units, 1], s=size * 2.5, facecolors="none",
                           edgecolors=color, linewidths=0.4)
                if s.center is not None and s.radius is not None:
                    ax.add_patch(Circle(s.center, s.radius, fill=False, color=color, lw=1.2,
                                        ls="-" if s is sel else "--"))
            ax.set_aspect("equal")
            ax.set_xlabel("sheet x (mm)")
            ax.set_ylabel("sheet y (mm)")
            ax.invert_yaxis()
        else:
            c = int(unit_shape[0])
            grid = d.reshape(c, -1)
            im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            if sel is not None:
                rows, cols = np.divmod(sel.units, grid.shape[1])
                ax.scatter(cols, rows, s=6, facecolors="none", edgecolors="k", linewidths=0.5)
            ax.set_xlabel("spatial position (row * W + col)")
            ax.set_ylabel("channel")
        n = len(sel) if sel is not None else 0
        ax.set_title(f"{cat} d' ({layer}); lesion {n} units", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def alignment_change_figure(changes: Mapping[str, Mapping[str, Any]], size_label: str):
    """One panel per brain target: the change of the layer's alignment score under each main-size lesion (lesioned
    minus clean), selective lesions as bars, controls as their mean with the min-max over draws; 0 marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(changes), figsize=(4.2 * len(changes), 0.5 + 0.32 * _max_rows(changes)),
                             squeeze=False, layout="constrained")
    for ax, (target, scores) in zip(axes[0], changes.items()):
        rows = [(name, entry) for name, entry in scores.items() if isinstance(entry, Mapping)
                and ("delta" in entry or "delta_mean" in entry)]
        for y, (name, entry) in enumerate(rows):
            kind = name.split("/")[-1]
            colour = KIND_STYLE.get(kind, ("tab:blue",))[0]
            if "delta_mean" in entry:
                lo, hi = entry["delta_range"]
                ax.errorbar(entry["delta_mean"], y, xerr=[[entry["delta_mean"] - lo], [hi - entry["delta_mean"]]],
                            fmt="o", color=colour, capsize=3)
            else:
                ax.barh(y, entry["delta"], color=colour, height=0.6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [name.replace("/", ": ") for name, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(target, fontsize=10)
        ax.set_xlabel(f"score change (lesioned - clean), {size_label}", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _max_rows(changes: Mapping[str, Mapping[str, Any]]) -> int:
    return max((sum(isinstance(v, Mapping) for v in scores.values()) for scores in changes.values()), default=1)
