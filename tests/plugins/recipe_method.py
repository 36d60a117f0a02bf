"""Recipe: a new attribution method, from outside the package (CONTRIBUTING.md, "Adding an attribution method").

Occlusion (Zeiler & Fergus 2014): slide a patch of baseline values over the image and record how much the target
changes. captum's ``Occlusion`` does the work; this one class wraps it (one explainer, one ``attribute`` call),
carries its citation, and declares its own options, set in the study as
``attribute.method_options.occlusion: {window: 8, stride: 4}``.
"""

from dataclasses import dataclass

from workbench.attribution import METHODS, AttributionMethod
from workbench.config import bounded

CITATION = ("Zeiler, M.D., & Fergus, R. (2014). Visualizing and understanding convolutional networks. ECCV 2014, "
            "LNCS 8689, 818-833.")


@dataclass
class OcclusionOptions:
    window: int = bounded(8, min=1)   # side of the square patch, in pixels of the model's input
    stride: int = bounded(4, min=1)   # step between patch positions, in pixels


@METHODS.register("occlusion", citation=CITATION)
class Occlusion(AttributionMethod):
    """Change of the target when a square patch of the image takes the baseline's values (captum ``Occlusion``)."""

    option_schema = OcclusionOptions  # parsed from attribute.method_options.occlusion (typos name the nearest key)

    def __init__(self, model, target, *, window: int = 8, stride: int = 4, **kw):
        super().__init__(model, target, **kw)
        self.window, self.stride = int(window), int(stride)

    def options(self):
        return {**super().options(), "window": self.window, "stride": self.stride}

    def _make_explainer(self):
        from captum.attr import Occlusion as CaptumOcclusion

        return CaptumOcclusion(self.forward)

    def _attribute_batch(self, x, baselines):
        channels = x.shape[1]
        return self.explainer.attribute(
            x, sliding_window_shapes=(channels, self.window, self.window), strides=(channels, self.stride, self.stride),
            baselines=baselines, target=0,
            # images x occluded copies in one forward pass: at most internal_batch_size rows
            perturbations_per_eval=max(1, self.internal_batch_size // x.shape[0]))
