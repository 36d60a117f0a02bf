"""What a stage is given: ``StageContext``, built once per stage by the pipeline.

A stage is ``function(ctx) -> dict``. Everything it needs beyond its own library code comes from the context: the run
directory (``ctx.run``, which owns every artefact path), its validated config section (``ctx.config``), the seed and
device, the run's model and its preprocessing, the training data, progress bars, logging, figures and citations.
No stage imports ``workbench.pipeline``.

From a notebook, without Hydra or the pipeline:

    ctx = StageContext.create(cfg_dict, RunDir("results/mine"), "align")
    section = align_stage(ctx)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping

from workbench.run import RunDir


@dataclass
class Headline:
    """One number a stage puts on the report's summary card: ``key`` is its dotted path in metrics.json
    (``align.rsa.hIT.scores.fc.score``), so the report shows the value the stage wrote, and a test can check it."""

    name: str
    value: Any
    label: str
    key: str
    unit: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    percent: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "value": self.value, "label": self.label, "key": self.key, "unit": self.unit}
        if self.details:
            out["details"] = dict(self.details)
        if self.percent:
            out["percent"] = True
        return out


@dataclass
class StageContext:
    name: str                                   # the stage's name ("align")
    run: RunDir
    cfg: Mapping[str, Any]                      # the whole validated config (read it, do not change it)
    config: Any = None                          # this stage's section, an instance of its schema
    seed: int = 0
    device_name: str | None = "auto"
    log: Callable[[str], None] = print
    references: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: Mapping[str, Any], run: RunDir, stage: str, log: Callable[[str], None] = print
               ) -> "StageContext":
        """The context of ``stage`` for ``cfg`` (validated here: unknown keys and bad values raise ConfigError)."""
        from workbench.config import parse
        from workbench.run_config import validate_run_keys
        from workbench.stages import STAGES

        validate_run_keys(cfg)  # seed, trainer and data keys: a named error, not int()'s or Lightning's
        spec = STAGES.get(stage)
        schema = spec.resolve_config()
        section = parse(schema, cfg.get(spec.key), spec.key) if schema is not None else None
        return cls(stage, run, cfg, section, int(cfg.get("seed") or 0), cfg.get("device", "auto"), log)

    # -- compute -------------------------------------------------------------------------------------------------
    @cached_property
    def device(self):
        """torch.device: CUDA when present and ``device: auto``."""
        from workbench.utils import get_device

        return get_device(self.device_name)

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.cfg.get("model") or {})

    @cached_property
    def preprocess(self):
        """The model's input preprocessing (``model.preprocess``)."""
        from workbench.features.preprocess import Preprocess

        return Preprocess.from_config(self.model_config.get("preprocess"))

    def model(self, *, train: bool = False):
        """The run's trained model (``run.checkpoint_path``) if the train stage wrote one, else the configured model
        freshly initialised with the run's seed (an untrained baseline). In eval mode unless ``train``."""
        from workbench.models import build_model
        from workbench.utils import seed_everything

        if self.run.has_checkpoint():
            model = self.run.load_model()
        else:
            seed_everything(self.seed)
            model = build_model(self.model_config)
        return model.train(train)

    def datamodule(self, **overrides: Any):
        """The training data (``cfg["data"]``, a ``_target_`` spec) with the model's preprocessing filled in."""
        from workbench.data.datamodules import build_datamodule

        data = {**dict(self.cfg.get("data") or {}), **overrides}
        return build_datamodule(data, self.model_config.get("preprocess"), self.seed)

    # -- feedback ------------------------------------------------------------------------------------------------
    def progress(self, iterable: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterable:
        """A tqdm progress bar named after the stage: drawn only on a terminal, off when ``WORKBENCH_PROGRESS=0``."""
        from tqdm.auto import tqdm

        from workbench.logs import progress_disabled

        return tqdm(iterable, desc=f"{self.name}: {desc}", total=total, unit=unit, leave=False,
                    disable=progress_disabled())

    def save_figure(self, fig, name: str) -> None:
        """figures/<name>.png and .pdf; closes the figure. Name it ``<stage>_<what>`` so the report files it."""
        import matplotlib.pyplot as plt

        try:
            self.run.save_figure(fig, name)
        finally:
            plt.close(fig)

    # -- citations and headline ----------------------------------------------------------------------------------
    def cite(self, registry, name: str) -> None:
        """Record that this stage used registry entry ``name``: its citations go to the section's references."""
        for text in registry.citations(name):
            if text and text not in self.references:
                self.references.append(text)

    def cite_text(self, *texts: str) -> None:
        """Citations of what has no registry entry of its own (a method inside a registered metric's code)."""
        for text in texts:
            if text and text not in self.references:
                self.references.append(text)

    def headline(self, name: str, value: Any, label: str, key: str, unit: str = "", *, percent: bool = False,
                 **details: Any) -> dict[str, Any]:
        """One summary-card entry; ``key`` is the dotted metrics.json path of ``value`` (the stage name first)."""
        if not key.startswith(self.name + "."):
            key = f"{self.name}.{key}"
        return Headline(name, value, label, key, unit, details, percent).to_dict()
