"""ITN's wiring cost (Blauch et al. 2022) on known answers: the unrolled connectivity of a convolution (its
Jacobian) times the sheet distances, computed directly, equals the loss; local wiring costs nothing; the cost
scales with distance; gradients reach the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workbench.models.sheet import CorticalSheet
from workbench.training.losses import LOSSES, WiringCostLoss, connection_distances


def direct_cost(layer: nn.Module, in_shape, pre: CorticalSheet, post: CorticalSheet) -> float:
    """sum over every (post, pre) unit pair of w^2 * d, with w read off the layer's Jacobian (the dense matrix)."""
    x = torch.zeros(1, *in_shape, dtype=torch.float64)
    dense = torch.autograd.functional.jacobian(lambda v: layer(v).flatten(), x).reshape(post.n_units, -1)
    d = np.linalg.norm(post.positions[:, None].astype(np.float64) - pre.positions[None].astype(np.float64), axis=-1)
    return float((dense.numpy() ** 2 * d).sum())


class Feed(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.post = layer

    def forward(self, x):
        return self.post(x)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_cost_equals_the_direct_sum_over_its_unrolled_connections(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=1, bias=False).double()
    pre = CorticalSheet((2, 6, 6), layer="pre", seed=1)
    out = 6 // stride
    post = CorticalSheet((3, out, out), layer="post", seed=2)
    distances, n = connection_distances(conv, (2, 6, 6), pre.positions, post)
    loss = float((conv.weight.detach() ** 2 * distances).sum())
    assert loss == pytest.approx(direct_cost(conv, (2, 6, 6), pre, post), rel=1e-6)
    # connections: every output position times the kernel taps that land inside the input, per channel pair
    dense = torch.autograd.functional.jacobian(lambda v: conv(v).flatten(), torch.ones(1, 2, 6, 6).double())
    assert n == int((dense.abs() > 0).sum())


def test_linear_cost_and_zero_for_local_wiring_and_linear_growth_with_distance():
    torch.manual_seed(0)
    fc = nn.Linear(8, 4).double()
    pre, post = CorticalSheet((8,), seed=1), CorticalSheet((4,), seed=2)
    distances, n = connection_distances(fc, (8,), pre.positions, post)
    assert n == 32
    assert float((fc.weight.detach() ** 2 * distances).sum()) == pytest.approx(direct_cost(fc, (8,), pre, post))
    # a 1x1 convolution between two one-channel sheets laid out alike: every connection has length 0
    conv = nn.Conv2d(1, 1, 1, bias=False)
    same = CorticalSheet((1, 4, 4), jitter=0.0)
    assert float(connection_distances(conv, (1, 4, 4), same.positions, same)[0].abs().sum()) == 0.0
    # doubling the sheets doubles every distance, hence the cost (jitter scales with the slot spacing)
    small = [CorticalSheet(s, size_mm=5.0, seed=i) for i, s in enumerate([(2, 4, 4), (3, 4, 4)])]
    large = [CorticalSheet(s, size_mm=10.0, seed=i) for i, s in enumerate([(2, 4, 4), (3, 4, 4)])]
    conv3 = nn.Conv2d(2, 3, 3, padding=1)
    d_small = connection_distances(conv3, (2, 4, 4), small[0].positions, small[1])[0]
    d_large = connection_distances(conv3, (2, 4, 4), large[0].positions, large[1])[0]
    assert torch.allclose(d_large, 2 * d_small, rtol=1e-5)


def test_registered_loss_on_a_model_finds_the_sheet_before_and_passes_gradients():
    from workbench.models import build_model
    from workbench.training.module import TopographicModule

    assert "wiring_cost" in LOSSES.names() and "Blauch" in LOSSES.citation("wiring_cost")
    torch.manual_seed(0)
    cfg = {"name": "small_cnn", "width": 2, "topography": {"layers": ["conv3", "conv4"], "weight": 1.0,
                                                           "loss": "wiring_cost",
                                                           "wiring_cost": {"reduction": "sum"}}}
    model = build_model(cfg)
    module = TopographicModule(model, cfg)
    loss4 = module.topo_losses[1]
    with pytest.raises(RuntimeError, match="first forward pass"):
        loss4()
    model(torch.randn(2, 3, 32, 32))
    value = loss4()
    # conv4's input is conv3's output, which has a sheet: the cost is over conv3 -> conv4 on those two sheets
    conv = model.conv4[0]
    expected = (conv.weight.detach().double() ** 2 * connection_distances(
        conv, (8, 8, 8), model.cortical_sheets["conv3"].positions, model.cortical_sheets["conv4"])[0]).sum()
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-4)
    value.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert module.topo_losses[0]() > 0       # conv3's input (conv2's output) has no sheet: a default one


def test_bad_options_are_named():
    sheet = CorticalSheet((4, 2, 2), layer="post")
    model = Feed(nn.Conv2d(2, 4, 3, padding=1))
    sheet.layer = "post"
    with pytest.raises(ValueError, match="power"):
        WiringCostLoss(sheet, power=3, model=model)
    with pytest.raises(ValueError, match="reduction"):
        WiringCostLoss(sheet, reduction="max", model=model)
