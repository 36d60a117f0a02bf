"""Intervention: unit ablation, connection deletion, lesion selections, lesion effects and interventional alignment.

    ablate_units(model, layer, units, mode="zero"|"mean", reference=None)   # context manager (forward hook)
    ablate_connections(model, layer, mask | in_channels=..., out_channels=...)  # context manager (weights)
    top_k_selective / disk_around_peak / random_units / random_disk / size_sweep -> Selection
    interventional_alignment(...)  # Rajalingham & DiCarlo (2019) site analysis
    lesion_specificity(...)        # selective lesion vs size-matched random controls

The stage (``workbench.intervention.stage.intervene_stage``) runs these on a run's model.
"""

from workbench.intervention.ablation import (AblationHandle, ablate_connections, ablate_units, connection_mask,
                                             get_layer, layer_mean_activation, resolve_units, weight_module)
from workbench.intervention.effects import (category_response_change, class_deficits, layer_outputs,
                                            per_class_accuracy, percentile_ci, predict_labels,
                                            relative_response_change, stratified_bootstrap_indices)
from workbench.intervention.scoring import (interventional_alignment, lesion_specificity, profile_correlations,
                                            site_profiles)
from workbench.intervention.selection import (Selection, category_dprime, disk, disk_around_peak, random_disk,
                                              random_units, resolve_size, selectivity_peak, sheet_positions,
                                              size_sweep, smooth_on_sheet, top_k_selective)

__all__ = [
    "AblationHandle", "ablate_connections", "ablate_units", "connection_mask", "get_layer", "layer_mean_activation",
    "resolve_units", "weight_module", "category_response_change", "class_deficits", "layer_outputs",
    "per_class_accuracy", "percentile_ci", "predict_labels", "relative_response_change",
    "stratified_bootstrap_indices", "interventional_alignment", "lesion_specificity", "profile_correlations",
    "site_profiles", "Selection", "category_dprime", "disk", "disk_around_peak", "random_disk", "random_units",
    "resolve_size", "selectivity_peak", "sheet_positions", "size_sweep", "smooth_on_sheet", "top_k_selective",
]
