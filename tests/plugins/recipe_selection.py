"""Recipe: a new lesion selection, from outside the package (CONTRIBUTING.md, "Adding a lesion selection").

The units *least* selective for a category: the other end of the d' ranking from ``top_k``. Ablating them tests
whether a network relies on its selective units more than on its unselective ones; Morcos et al. (2018) found
class selectivity a poor predictor of a unit's importance. Compared with size-matched random units.
"""

import numpy as np

from workbench.intervention.selection import SELECTIONS, Selection, SelectiveLesion, resolve_size

CITATION = ("Morcos, A. S., Barrett, D. G. T., Rabinowitz, N. C., & Botvinick, M. (2018). On the importance of "
            "single directions for generalization. International Conference on Learning Representations (ICLR).")


@SELECTIONS.register("least_selective", citation=CITATION,
                     description="the least selective units for the category (opposite end of top_k)")
class LeastSelective(SelectiveLesion):
    control = "random"          # a registered control lesion: the size-matched comparison of the stage
    needs_sheet = False         # True would skip it on layers without a cortical sheet

    def choose(self, layer, size, selectivity, label):
        values = np.where(np.isfinite(selectivity), selectivity, np.inf)   # a NaN d' is never "least selective"
        units = np.argsort(values, kind="stable")[:resolve_size(size, layer.n_units)]
        return Selection(units, layer.n_units, layer=layer.name, kind="least_selective", label=label,
                         unit_shape=layer.unit_shape, info={"max_selectivity": float(values[units].max())})
