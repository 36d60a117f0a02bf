"""Training: topographic losses, the Lightning module, and the train / topography stages."""

from workbench.training.losses import (LOSSES, SpatialCorrelationLoss, TopographyObjective, WeightSmoothnessLoss,
                                       parse_topography, pearson_rows, sample_neighbourhoods,
                                       spatial_correlation_loss, weight_sheet)
from workbench.training.module import TopographicModule

__all__ = [
    "LOSSES", "SpatialCorrelationLoss", "WeightSmoothnessLoss", "TopographyObjective", "parse_topography",
    "pearson_rows", "sample_neighbourhoods", "spatial_correlation_loss", "weight_sheet", "TopographicModule",
]
