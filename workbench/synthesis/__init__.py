"""Synthesis and neural control: images that drive a unit, a cortical patch or a V4 neuron's fitted model.

    from workbench.synthesis import synthesize, NormBudget
    budget = NormBudget.from_stimuli(preprocess(stimuli.images))        # natural images' contrast
    result = synthesize(model, UnitTarget(layer="conv3", channel=0), budget=budget, seeds=[0, 1, 2])
    compare_with_natural(model, result, natural_x)                       # vs the best natural image, same budget

Targets are the attribution targets (``workbench.attribution.targets``) plus the population objectives of
``workbench.synthesis.objectives``; the stage is ``workbench.synthesis.stage.synthesize_stage``.
"""

from workbench.synthesis.image import FourierImage, NormBudget, PixelImage, colour_sqrt, make_image
from workbench.synthesis.objectives import (Objective, PatternObjective, SiteContrastTarget, TargetObjective,
                                            as_objective)
from workbench.synthesis.synthesize import SynthesisError, SynthesisResult, SynthesisSettings, synthesize
from workbench.synthesis.transforms import Transforms, diversity_penalty, frequency_penalty
from workbench.synthesis.validate import NaturalComparison, compare_with_natural, fit_split_readouts

__all__ = [
    "synthesize", "SynthesisResult", "SynthesisError", "SynthesisSettings", "NormBudget", "PixelImage",
    "FourierImage", "colour_sqrt", "make_image", "Objective", "TargetObjective", "PatternObjective",
    "SiteContrastTarget", "as_objective", "Transforms", "frequency_penalty", "diversity_penalty",
    "NaturalComparison", "compare_with_natural", "fit_split_readouts",
]
