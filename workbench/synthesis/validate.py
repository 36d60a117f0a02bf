"""Is a synthesised image any good? Two checks built into every synthesis the stage runs.

* ``compare_with_natural``: the objective of each synthesised image against the natural images of the stimulus set,
  each projected onto the same norm budget (natural images with more contrast than the budget are shrunk towards
  its centre; the rest are unchanged), so the synthesis wins only by what it shows, not by more contrast.
* ``fit_split_readouts``: two ridge readouts of the same layer fitted on disjoint halves of the images. The synthesis
  drives readout A; readout B, fitted without A's images, scores the result (held-out control: an image that
  exploits A's fitting noise does not drive B). Each half's readout is also scored on the other half's images (its
  held-out Pearson r per neuroid), which ranks the neuroids by how predictable they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.synthesis.image import NormBudget
from workbench.synthesis.objectives import Objective

__all__ = ["NaturalComparison", "compare_with_natural", "objective_values", "fit_split_readouts"]


@dataclass
class NaturalComparison:
    """Objective values of the synthesised images and of the natural images under the same budget."""

    synthetic: np.ndarray          # (n_seeds,)
    natural: np.ndarray            # (n_natural,)
    top: np.ndarray                # indices of the best natural images, best first

    @property
    def best_natural(self) -> float:
        return float(self.natural[self.top[0]])

    def summary(self) -> dict[str, Any]:
        best = self.best_natural
        spread = float(self.natural.std()) or 1.0
        return {"synthetic": self.synthetic.tolist(), "synthetic_best": float(self.synthetic.max()),
                "best_natural": best, "natural_median": float(np.median(self.natural)),
                "top_natural": self.top.tolist(), "top_natural_values": self.natural[self.top].tolist(),
                "fraction_above_best_natural": float(np.mean(self.synthetic > best)),
                # gain over the best natural image, in standard deviations of the natural images' values
                "gain_sd": (float(self.synthetic.max()) - best) / spread,
                "ratio_to_best_natural": float(self.synthetic.max() / best) if best > 0 else None}


def objective_values(objective: Objective, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The objective of every image of ``x`` (no transforms), in batches, on the objective's device."""
    device = next((b.device for b in objective.buffers()), torch.device("cpu"))
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(objective(x[i:i + batch_size].to(device))[1].double().cpu())
    return torch.cat(out).numpy()


def compare_with_natural(objective: Objective, synthetic: torch.Tensor, natural: torch.Tensor, budget: NormBudget,
                         top_k: int = 3, batch_size: int = 256) -> NaturalComparison:
    """``synthetic`` (n_seeds, C, H, W) against ``natural`` (N, C, H, W) model inputs, both under ``budget``."""
    if natural.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"natural images {tuple(natural.shape[1:])} and synthetic images "
                         f"{tuple(synthetic.shape[1:])} must have the same model-input shape")
    natural_values = objective_values(objective, budget.project(natural.float()), batch_size)
    synthetic_values = objective_values(objective, budget.project(synthetic.float()), batch_size)
    top = np.argsort(-natural_values, kind="stable")[:max(1, int(top_k))]
    return NaturalComparison(synthetic_values, natural_values, top)


def fit_split_readouts(features: np.ndarray, responses: np.ndarray, seed: int = 0, standardize: bool = True,
                       device: Any = None) -> list[dict[str, np.ndarray]]:
    """Two ridge readouts (``RidgeEncoder``, penalty by leave-one-out) on disjoint seeded halves of the images.

    Returns [A, B], each {coef, intercept, train (image indices), held_out_r (per neuroid, on the other half)}."""
    from workbench.alignment.regression import RidgeEncoder, make_folds, pearson_per_column

    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2 or len(responses) != len(features):
        raise ValueError(f"responses must be (n_images, n_neuroids) for {len(features)} images; got "
                         f"{responses.shape}")
    (half_a, half_b), _ = make_folds(len(features), 2, seed)
    out = []
    for train, test in ((half_a, half_b), (half_b, half_a)):
        encoder = RidgeEncoder(standardize=standardize, device=device).fit(features[train], responses[train])
        r = pearson_per_column(encoder.predict(features[test]), responses[test])
        out.append({"coef": np.asarray(encoder.coef_).reshape(responses.shape[1], -1),
                    "intercept": np.asarray(encoder.intercept_).reshape(-1), "train": np.sort(train),
                    "held_out_r": np.nan_to_num(r, nan=-1.0)})
    return out
