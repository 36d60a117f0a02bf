"""The measured effect, on small settings: the spatial loss makes a CIFAR-10 model's conv maps smoother."""

import pytest
import torch

from workbench.models import build_model
from workbench.models.topography import smoothness_curve
from workbench.training import TopographicModule


def _train_and_measure(weight: float, datamodule, images: torch.Tensor) -> tuple[float, float]:
    import lightning as L

    cfg = {"name": "small_cnn", "num_classes": 10, "width": 8,
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "cosine"},
           "topography": {"layers": ["conv3"], "weight": weight, "loss": "spatial_correlation",
                          "spatial_correlation": {"neighbourhood_size": 128, "n_neighbourhoods": 8,
                                                  "pool_size": 128}}}
    L.seed_everything(0, verbose=False)
    model = build_model(cfg)
    module = TopographicModule(model, cfg)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    model.eval()
    captured = {}
    model.conv3.register_forward_hook(lambda m, i, o: captured.__setitem__("conv3", o))
    with torch.no_grad():
        model(images)
    responses = captured["conv3"].reshape(len(images), -1).numpy()
    curve = smoothness_curve(responses, model.cortical_sheets["conv3"].positions, seed=0)
    return curve.index, float(trainer.callback_metrics["train/acc"])


@pytest.mark.slow
def test_spatial_loss_raises_smoothness_index_on_cifar10(data_root):
    from workbench.data import CIFAR10DataModule

    dm = CIFAR10DataModule(subset=640, test_subset=200, batch_size=64, seed=0)  # 9 steps per epoch
    dm.setup()
    images = torch.stack([dm.test_set[i][0] for i in range(200)])
    plain_index, plain_acc = _train_and_measure(0.0, dm, images)
    topo_index, topo_acc = _train_and_measure(2.0, dm, images)
    # same seed, same data, same initial weights: only the loss differs (measured with TDANN's square-window
    # neighbourhoods and scale-free correlations, the default: 0.015 vs 0.334; accuracy 0.245 vs 0.214)
    assert topo_index > plain_index + 0.1, (plain_index, topo_index)
    assert topo_acc > 0.15  # still learning the task (chance = 0.1)
