"""Attribution: which pixels drive a class, a unit, a cortical patch or a model's prediction of a neuron.

Library (no Hydra, no run directories):

- ``attribute(model, inputs, target, method, **options) -> Attribution`` and one class per method wrapping captum
  (``Saliency``, ``SmoothGrad``, ``IntegratedGradients`` [+ NoiseTunnel], ``GradientShap``, ``DeepLift``) and shap
  (``ShapGradient`` = GradientExplainer, ``ShapDeep`` = DeepExplainer).
- Targets: ``ClassTarget``, ``UnitTarget``, ``PatchTarget``, ``NeuralSiteTarget`` (see ``targets``).
- Checks of the maps: completeness, cascading model-parameter randomisation, deletion / insertion, agreement
  between methods (see ``checks``).

The stage (``workbench.attribution.stage.attribute_stage``) runs these on a trained model for the default study.
"""

from workbench.attribution.methods import (
    METHODS, Attribution, AttributionMethod, DeepLift, GradientShap, IntegratedGradients, Saliency, ShapDeep,
    ShapGradient, SmoothGrad, attribute, method_names,
)
from workbench.attribution.safety import check_module_rules, safe_copy
from workbench.attribution.targets import (
    ClassTarget, NeuralSiteTarget, PatchTarget, Target, TargetForward, UnitTarget, as_target,
)

__all__ = [
    "attribute", "Attribution", "AttributionMethod", "METHODS", "method_names",
    "Saliency", "SmoothGrad", "IntegratedGradients", "GradientShap", "DeepLift", "ShapGradient", "ShapDeep",
    "Target", "ClassTarget", "UnitTarget", "PatchTarget", "NeuralSiteTarget", "TargetForward", "as_target",
    "safe_copy", "check_module_rules",
]
