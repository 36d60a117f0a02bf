"""TopographicModule: cross-entropy + sum over layers of weight * topographic loss, as a LightningModule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import parse, to_dict
from workbench.models.config import OptimizerConfig
from workbench.models.hooks import register_layer_hooks
from workbench.models.sheet import CorticalSheet
from workbench.training.losses import parse_topography

__all__ = ["TopographicModule"]


class TopographicModule(L.LightningModule):
    """Trains ``model`` on classification with the topographic losses of ``model_cfg['topography']``.

    Logged per step/epoch: ``train/ce``, ``train/acc``, ``train/loss`` (total), ``train/topo_<layer>_<loss>`` for
    every objective (also when its weight is 0: then it is computed without gradient, for comparison, and the
    training itself is exactly plain training), and ``val/*`` / ``test/*`` likewise.
    """

    def __init__(self, model: nn.Module, model_cfg: dict, sheets: dict[str, CorticalSheet] | None = None,
                 optimizer: dict[str, Any] | None = None, monitor_zero_weight: bool = True):
        super().__init__()
        self.model = model
        self.model_cfg = model_cfg
        # defaults and checks: workbench.models.config.OptimizerConfig
        self.optimizer_cfg = to_dict(parse(OptimizerConfig, {**(model_cfg.get("optimizer") or {}), **(optimizer or {})},
                                           "model.optimizer"))
        self.objectives = parse_topography(model_cfg, model, sheets)
        if not monitor_zero_weight:
            self.objectives = [o for o in self.objectives if o.weight > 0]
        self.topo_losses = nn.ModuleList([o.loss for o in self.objectives])  # moves buffers with the module
        self._captured: dict[str, torch.Tensor] = {}
        layers = sorted({o.layer for o in self.objectives if o.loss.needs_activations})
        self._hooks = register_layer_hooks(self.model, {layer: self._capture(layer) for layer in layers},
                                           "topographic loss")
        self.save_hyperparameters({"model_cfg": model_cfg, "optimizer": self.optimizer_cfg})

    def _capture(self, layer: str):
        def hook(_module, _inputs, output):
            self._captured[layer] = output
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _topographic_terms(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        total = None
        values = {}
        for obj in self.objectives:
            act = self._captured.get(obj.layer)
            if obj.weight > 0 and self.training:
                value = obj.loss(act)
                total = obj.weight * value if total is None else total + obj.weight * value
            else:
                with torch.no_grad():
                    value = obj.loss(None if act is None else act.detach())
            values[f"topo_{obj.layer}_{obj.loss_name}"] = value.detach()
        return total, values

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        self._captured.clear()
        logits = self.model(x)
        ce = F.cross_entropy(logits, y)
        topo, values = self._topographic_terms()
        self._captured.clear()  # do not keep the graph of the activations alive past the step
        loss = ce if topo is None else ce + topo
        acc = (logits.argmax(1) == y).float().mean()
        on_step = split == "train"
        sync = split != "train"
        self.log(f"{split}/ce", ce, on_step=on_step, on_epoch=True, prog_bar=False, sync_dist=sync)
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=sync)
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=split == "train", sync_dist=sync)
        for name, value in values.items():
            self.log(f"{split}/{name}", value, on_step=False, on_epoch=True, sync_dist=sync)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        if cfg["name"] == "sgd":
            opt = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                  weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])
        else:  # adamw (OptimizerConfig allows no other name)
            opt = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        if cfg["scheduler"] == "none":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
