"""Attribution: which pixels drive a class, a unit, a cortical patch or a model's prediction of a neuron.

Library (no Hydra, no run directories):

- ``attribute(model, inputs, target, method, **options) -> Attribution`` and one class per method wrapping captum
  (``Saliency``, ``SmoothGrad``, ``IntegratedGradients`` [+ NoiseTunnel], ``GradientShap``, ``DeepLift``) and shap
  (``ShapGradient`` = GradientExplainer, ``ShapDeep`` = DeepExplainer), each registered in ``METHODS`` with its
  citation. Add your own with ``@METHODS.register("name", citation=...)`` on an ``AttributionMethod`` subclass in a
  module named by ``plugins: [...]`` (CONTRIBUTING.md, "Adding an attribution method").
- Targets: ``ClassTarget``, ``UnitTarget``, ``PatchTarget``, ``NeuralSiteTarget`` (see ``targets``).
- Checks of the maps: completeness, cascading model-parameter randomisation, deletion / insertion, agreement
  between methods (see ``checks``; each in the ``CHECKS`` registry with its citations).

The stage (``workbench.attribution.stage.attribute_stage``) runs these on the run's model; its config section is
``workbench.attribution.config.AttributeConfig``.
"""

from workbench.attribution.methods import (
    METHODS, Attribution, AttributionMethod, DeepLift, GradientShap, IntegratedGradients, MethodRegistry, Saliency,
    ShapDeep, ShapGradient, SmoothGrad, attribute, method_class, method_names,
)
from workbench.attribution.safety import check_module_rules, safe_copy
from workbench.attribution.targets import (
    ClassTarget, NeuralSiteTarget, PatchTarget, Target, TargetForward, UnitTarget, as_target,
)

__all__ = [
    "attribute", "Attribution", "AttributionMethod", "METHODS", "MethodRegistry", "method_class", "method_names",
    "Saliency", "SmoothGrad", "IntegratedGradients", "GradientShap", "DeepLift", "ShapGradient", "ShapDeep",
    "Target", "ClassTarget", "UnitTarget", "PatchTarget", "NeuralSiteTarget", "TargetForward", "as_target",
    "safe_copy", "check_module_rules",
]
