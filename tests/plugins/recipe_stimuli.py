"""Recipe: a stimulus set, from outside the package (CONTRIBUTING.md, "Adding a stimulus set").

One function registered in ``workbench.data.STIMULUS_SETS`` that returns a ``StimulusSet``: uint8 images
(n, H, W, 3) and a metadata table with a unique ``stimulus_id`` per image plus any columns you like (boolean
category columns can be the target of topography contrasts and lesion selections). The citation goes on the
registry entry: every stage that uses the set lists it in its references. Here the images are drawn in code (12
shapes: 4 disks, 4 squares, 4 stripe patches, in different sizes and colours); your own set would read files, e.g.
``StimulusSet.from_folder("my_images/", metadata=pd.read_csv("my_images.csv"))``.

Use it with ``plugins: [recipe_stimuli]`` and ``extract.stimulus_sets: [..., recipe_shapes]`` (or
``topography.stimulus_set: recipe_shapes`` with ``topography.contrasts: {round: null}``).
"""

import numpy as np
import pandas as pd

from workbench.data import STIMULUS_SETS, StimulusSet

NAME = "recipe_shapes"
CITATION = "workbench recipe shapes: 12 synthetic images (disks, squares, stripes) drawn in code, 48 px."
SIZE = 48
COLOURS = [(230, 60, 40), (40, 160, 70), (50, 90, 220), (240, 200, 40)]


def _shape(kind: str, radius: float, colour: tuple[int, int, int]) -> np.ndarray:
    y, x = (np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2) / (SIZE / 2)
    if kind == "disk":
        mask = x ** 2 + y ** 2 <= radius ** 2
    elif kind == "square":
        mask = np.maximum(abs(x), abs(y)) <= radius
    else:  # stripes inside a square patch
        mask = (np.maximum(abs(x), abs(y)) <= radius) & (np.floor((x + 1) * 4) % 2 == 0)
    image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)  # grey background
    image[mask] = colour
    return image


@STIMULUS_SETS.register(NAME, citation=CITATION, description="12 synthetic shapes with category metadata (a recipe)")
def recipe_shapes() -> StimulusSet:
    rows, images = [], []
    for kind in ("disk", "square", "stripes"):
        for i, colour in enumerate(COLOURS):
            radius = 0.4 + 0.15 * i
            rows.append({"stimulus_id": f"{kind}_{i}", "category": kind, "round": kind == "disk",
                         "angular": kind != "disk", "radius": radius})
            images.append(_shape(kind, radius, colour))
    return StimulusSet(NAME, pd.DataFrame(rows), np.stack(images))
