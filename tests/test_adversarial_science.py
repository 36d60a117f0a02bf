"""Silent wrong science (issue 13): inputs that used to give a plausible number now give a clear error."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from workbench.models.hooks import layer_hooks


# -- a hook on a module that runs more than once per forward pass --------------------------------------------------

@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class _Stimuli:
    name = "tiny"
    stimulus_ids = ["a", "b"]
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)

    def __len__(self):
        return 2


class _Aliased(nn.Module):
    """One ReLU object registered as ``act`` and ``act_again``, run at both places."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.act = nn.ReLU()
        self.act_again = self.act

    def forward(self, x):
        return self.act_again(self.conv2(self.act(self.conv1(x)))).mean((2, 3))


REPEATED = r"'layer1\.0\.relu' \(ReLU\) runs 2 times in one forward pass.*'layer1\.0'"


def test_ablating_a_relu_that_runs_twice_is_refused(resnet, images):
    from workbench.intervention import ablate_units

    with pytest.raises(ValueError, match="ablation: layer " + REPEATED):
        with ablate_units(resnet, "layer1.0.relu", [0, 1]):
            resnet(images)
    with ablate_units(resnet, "layer1.0", [0, 1]) as handle:  # the block runs once: the suggested fix works
        resnet(images)
    assert handle.n_calls == 1
    assert not resnet._forward_hooks and not resnet._forward_pre_hooks  # nothing left attached after the error


def test_mean_ablation_reference_of_a_relu_that_runs_twice_is_refused(resnet, images):
    from workbench.intervention.ablation import layer_mean_activation

    with pytest.raises(ValueError, match="mean ablation reference: layer " + REPEATED):
        layer_mean_activation(resnet, "layer1.0.relu", images)


def test_extracting_a_relu_that_runs_twice_is_refused(resnet):
    from workbench.features.extract import extract_activations

    with pytest.raises(ValueError, match="extraction: layer " + REPEATED):
        extract_activations(resnet, _Stimuli(), ["layer1.0.conv1", "layer1.0.relu"], progress=False)
    acts = extract_activations(resnet, _Stimuli(), ["layer1.0"], progress=False)
    assert acts["layer1.0"].shape == (2, 64 * 8 * 8)


def test_attributing_to_a_relu_that_runs_twice_is_refused(resnet, images):
    from workbench.attribution.targets import TargetForward, UnitTarget

    with pytest.raises(ValueError, match="attribution target: layer " + REPEATED):
        TargetForward(resnet, UnitTarget("layer1.0.relu", 0), images)
    assert TargetForward(resnet, UnitTarget("layer1.0", 0), images)(images).shape == (2, 1)


def test_an_aliased_module_that_runs_at_both_places_is_refused_naming_the_alias():
    from workbench.features.extract import extract_activations
    from workbench.intervention import ablate_units

    model = _Aliased().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"'act' \(ReLU\) runs 2 times.*also registered as \['act_again'\]"):
        with ablate_units(model, "act", [0]):
            model(x)
    with pytest.raises(ValueError, match=r"'act_again' \(ReLU\) runs 2 times.*also registered as \['act'\]"):
        extract_activations(model, _Stimuli(), ["act_again"], progress=False)


def test_attribution_to_an_aliased_module_explains_the_place_its_name_registers():
    """Attribution runs on a copy in which every registered place has its own module, so the hook on ``act`` sees
    exactly the calls made through ``self.act``: the same maps as a model with two separate ReLUs."""
    import copy

    from workbench.attribution import attribute
    from workbench.attribution.targets import UnitTarget

    aliased = _Aliased().eval()
    separate = copy.deepcopy(aliased)
    separate.act_again = nn.ReLU()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = [attribute(m, x, UnitTarget("act", channel=1), method="saliency").attributions for m in (aliased, separate)]
    np.testing.assert_array_equal(maps[0], maps[1])
    assert np.abs(maps[0]).sum() > 0


def test_a_module_run_once_is_hooked_normally_and_hooks_are_removed():
    model = _Aliased().eval()
    seen = []
    with layer_hooks(model, {"conv2": lambda m, i, o: seen.append(o.shape)}, "test"):
        model(torch.randn(1, 3, 8, 8))
        model.conv2(torch.randn(1, 4, 6, 6))  # a layer run on its own is not a repeated call of a forward pass
    assert seen == [torch.Size([1, 4, 4, 4]), torch.Size([1, 4, 4, 4])]
    assert not model._forward_hooks and not model.conv2._forward_hooks


# -- an RDM of a dead layer ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["euclidean", "correlation", "cosine"])
def test_an_rdm_of_a_dead_layer_is_refused_naming_the_layer(metric):
    from workbench.alignment.rsa import compute_rdm

    rng = np.random.default_rng(0)
    dead = np.tile(rng.normal(3.0, 1.0, 64), (12, 1)).astype(np.float32)   # one pattern for every stimulus
    dead[:, :8] += rng.normal(0, 1e-7, (12, 8)).astype(np.float32) * 3.0     # float32 jitter in the last bits
    with pytest.raises(ValueError, match=rf"layer 'conv4': every {metric} dissimilarity is the same to within "
                                         r"rounding.*dead or saturated layer"):
        compute_rdm(dead, metric, name="layer 'conv4'")
    with pytest.raises(ValueError, match="layer 'relu': every euclidean dissimilarity"):
        compute_rdm(np.zeros((5, 10)), "euclidean", name="layer 'relu'")
    live = dead + rng.normal(0, 1e-3, dead.shape)  # small but real differences are kept
    assert np.ptp(compute_rdm(live, metric)[np.triu_indices(12, 1)]) > 0


def test_the_rsa_metric_names_the_dead_layer():
    from types import SimpleNamespace

    from workbench.alignment.metrics.rsa import RSAMetric
    from workbench.features.extract import Activations

    rng = np.random.default_rng(1)
    arrays = {"conv1": rng.normal(size=(6, 20)), "conv2": np.full((6, 20), 0.5)}
    acts = Activations(arrays, [f"s{i}" for i in range(6)], {"conv1": (20,), "conv2": (20,)})
    ctx = SimpleNamespace(run=SimpleNamespace(load_activations=lambda name: acts), device=torch.device("cpu"))
    metric = RSAMetric.__new__(RSAMetric)
    metric.settings = SimpleNamespace(metric="euclidean", stimulus_set="k92", rdm_set="k08", targets=["hIT"])
    with pytest.raises(ValueError, match="layer 'conv2': every euclidean dissimilarity"):
        metric.score(ctx, ["conv1", "conv2"])


# -- a user's assembly and image folder ------------------------------------------------------------------------------

def _folder_with(tmp_path, images: dict) -> tuple:
    """An image folder of ``{stimulus_id: PIL image}`` and an .npz assembly of 2 neuroids on those stimuli."""
    folder = tmp_path / "images"
    folder.mkdir()
    for sid, img in images.items():
        img.save(folder / f"{sid}.png")
    path = tmp_path / "assembly.npz"
    np.savez(path, responses=np.arange(len(images) * 2, dtype=float).reshape(-1, 2), stimulus_id=list(images))
    return path, folder


def test_a_16_bit_png_is_scaled_to_8_bits_not_saturated(tmp_path):
    from PIL import Image

    from workbench.data import load_recording

    grey16 = np.array([[0, 257, 32896], [65535, 1000, 65535]], dtype=np.uint16)
    path, folder = _folder_with(tmp_path, {"s16": Image.fromarray(grey16),
                                           "s8": Image.fromarray(np.full((2, 3, 3), 7, np.uint8))})
    assert Image.open(folder / "s16.png").mode == "I;16"  # what PIL's own convert("RGB") clips to 255
    _, stimuli = load_recording(path, folder)
    image = stimuli.images[list(stimuli.stimulus_ids).index("s16")]
    np.testing.assert_array_equal(image[..., 0], [[0, 1, 128], [255, 4, 255]])
    assert (image == image[..., :1]).all()  # grey stays grey


def test_translucent_images_are_refused_without_a_background_and_composited_on_one(tmp_path):
    from PIL import Image

    from workbench.data import load_assembly, load_recording

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, [[255, 0], [51, 255]]
    opaque = np.full((2, 2, 4), 255, np.uint8)
    path, folder = _folder_with(tmp_path, {"ghost": Image.fromarray(rgba, "RGBA"),
                                           "solid": Image.fromarray(opaque, "RGBA")})
    with pytest.raises(ValueError, match=r"image ghost\.png in .* has 2 translucent pixels.*background=\(r, g, b\)"):
        load_assembly(path, folder)
    _, stimuli = load_recording(path, folder, background=(0, 0, 100))
    ghost = stimuli.images[list(stimuli.stimulus_ids).index("ghost")]
    np.testing.assert_array_equal(ghost[0, 1], [0, 0, 100])                       # fully transparent: the screen
    np.testing.assert_array_equal(ghost[1, 0], [40, 0, 80])                       # alpha 0.2: 0.2 * 200, 0.8 * 100
    np.testing.assert_array_equal(ghost[0, 0], [200, 0, 0])
    with pytest.raises(ValueError, match="background must be three integers in 0-255"):
        load_assembly(path, folder, background=(0, 0, 300))


def test_a_user_benchmark_checks_its_background():
    from workbench.benchmarks.user import UserBenchmarkConfig
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="user benchmark 'mine': background must be three integers"):
        UserBenchmarkConfig(name="mine", assembly="a.nc", images="imgs", background=[128, 128])


@pytest.mark.parametrize("responses, stimulus_id, neuroid_id, error", [
    (np.zeros((0, 2)), [], None, r"the assembly has no presentations"),
    (np.ones((3, 2)), ["a", "b", "a"], None, r"stimulus ids repeat in the assembly: \['a'\].*groupby\('stimulus_id'\)"),
    (np.ones((3, 3)), ["a", "b", "c"], ["n1", "n2", "n1"], r"neuroid ids repeat in the assembly: \['n1'\].*its own"),
])
def test_empty_assemblies_and_repeated_ids_are_refused(tmp_path, responses, stimulus_id, neuroid_id, error):
    from workbench.data import load_assembly

    path = tmp_path / "assembly.npz"
    arrays = {"responses": responses, "stimulus_id": np.asarray(stimulus_id, dtype=str)}
    if neuroid_id is not None:
        arrays["neuroid_id"] = np.asarray(neuroid_id)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=error):
        load_assembly(path)


# -- config types and ranges ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, error", [
    ({"seed": "abc"}, r"^seed should be an integer, got 'abc'"),
    ({"seed": -1}, r"^seed must be >= 0 and <= 4294967295, got -1"),
    ({"trainer": {"max_epochs": -1}}, r"^trainer\.max_epochs must be >= 1, got -1"),
    ({"trainer": {"max_epochs": "ten"}}, r"^trainer\.max_epochs should be an integer, got 'ten'"),
    ({"trainer": {"limit_train_batches": 1.5}}, r"limit_train_batches = 1\.5: a float is a fraction .* \[0, 1\]"),
    ({"trainer": {"gradient_clip_val": float("nan")}}, r"^trainer\.gradient_clip_val should be a finite number"),
    ({"data": {"_target_": "x.Y", "batch_size": 0}}, r"^data\.batch_size must be >= 1, got 0"),
    ({"data": {"_target_": "x.Y", "val_fraction": 1.2}}, r"^data\.val_fraction must be >= 0 and <= 1, got 1\.2"),
])
def test_top_level_keys_are_checked_naming_the_key_value_and_range(cfg, error):
    from workbench.config import ConfigError
    from workbench.run_config import validate_run_keys

    with pytest.raises(ConfigError, match=error):
        validate_run_keys(cfg)


def test_the_shipped_configs_pass_and_unknown_trainer_keys_are_left_to_lightning(tiny_config):
    from workbench.run_config import validate_run_keys

    validate_run_keys(tiny_config)
    validate_run_keys({**tiny_config, "trainer": {**tiny_config["trainer"], "accumulate_grad_batches": 2,
                                                  "benchmark": False, "limit_val_batches": 2}})


def _numeric_fields(schema, path=()):
    """(path of keys, field name, bounds) of every bounded int/float field of ``schema`` and its sub-schemas."""
    import dataclasses
    import typing

    from workbench.config import _bounds

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        arms = [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if a is not type(None)]
        if len(arms) == 1 and dataclasses.is_dataclass(arms[0]):
            yield from _numeric_fields(arms[0], path + (f.name,))
        elif arms and all(a in (int, float) for a in arms):
            bounds = _bounds(f.name, f.metadata)
            if bounds:
                yield path, f.name, bounds


def _schemas():
    from workbench.models.config import OptimizerConfig, PreprocessConfig
    from workbench.run_config import DataKeys, TrainerKeys
    from workbench.stages import STAGES

    from workbench.alignment import METRICS

    stages = [(STAGES.get(n).key, STAGES.get(n).resolve_config()) for n in STAGES.names()]
    metrics = [(f"align.settings.{n}", METRICS.get(n).config) for n in METRICS.names()]
    return [(k, s) for k, s in stages + metrics if s is not None] + [
        ("model.optimizer", OptimizerConfig), ("model.preprocess", PreprocessConfig), ("trainer", TrainerKeys),
        ("data", DataKeys)]


def test_every_bounded_number_of_every_schema_refuses_a_value_out_of_range():
    from workbench.config import ConfigError, parse

    checked = set()
    for where, schema in _schemas():
        for path, name, bounds in _numeric_fields(schema):
            low = bounds.get("min", bounds.get("above"))
            bad = [v for v in (low - 1 if "min" in bounds else low if low is not None else None,
                               bounds["max"] + 1 if "max" in bounds else None) if v is not None]
            for value in bad:
                given = {name: value}
                for key in reversed(path):
                    given = {key: given}
                key = ".".join((where,) + path + (name,))
                with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be [<>]"):
                    parse(schema, given, where)
                checked.add(key)
    # the conventions reach keys no schema bounds itself
    # keys whose ranges come from the naming conventions alone, and the metric settings
    assert {"intervene.seed", "attribute.shap.seed", "align.commit_fraction", "data.val_fraction", "model.optimizer.lr",
            "trainer.max_epochs", "align.settings.rsa.n_bootstrap", "align.settings.ridge.n_folds"} <= checked


# -- determinism ------------------------------------------------------------------------------------------------

def _random_images(flags: list):
    """A datamodule of 32 seeded random images whose training loader records the kernel flags it is asked under."""
    import lightning as L

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,),
                                                                                                  generator=g))
    module = L.LightningDataModule.from_datasets(data, data, data, batch_size=16)

    def train_dataloader():
        flags.append((torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.deterministic))
        return torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)

    module.train_dataloader = train_dataloader
    return module


def _train_once(tmp_path, name: str, flags: list) -> tuple[dict, dict]:
    """(initial, trained) weights of a tiny topographic CNN, trained by the train stage's own Trainer set-up."""
    from pathlib import Path
    from types import SimpleNamespace

    import lightning as L
    import yaml

    from workbench.models import build_model
    from workbench.training.module import TopographicModule
    from workbench.training.stage import _fit_and_test

    shipped = yaml.safe_load((Path(__file__).parents[1] / "configs" / "trainer" / "cpu.yaml").read_text())
    trainer = {**shipped, "max_epochs": 1, "limit_val_batches": 1, "limit_test_batches": 1,
               "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    run = SimpleNamespace(checkpoints=tmp_path / name / "checkpoints", training_resume_path=None, path=tmp_path / name)
    ctx = SimpleNamespace(cfg={"trainer": trainer, "logger": None}, run=run, datamodule=lambda: _random_images(flags))
    model_cfg = {"name": "small_cnn", "num_classes": 10, "width": 4,
                 "optimizer": {"name": "sgd", "lr": 0.05, "scheduler": "none"},
                 "topography": {"layers": ["conv3"], "weight": 0.5, "loss": "spatial_correlation",
                                "spatial_correlation": {"neighbourhood_size": 32, "n_neighbourhoods": 2}}}
    L.seed_everything(0, workers=True, verbose=False)
    module = TopographicModule(build_model(model_cfg), model_cfg)
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    _fit_and_test(ctx, module, ctx.datamodule())
    return initial, {k: v.clone() for k, v in module.model.state_dict().items()}


def test_two_cpu_trainings_with_one_seed_give_bit_identical_weights_with_deterministic_kernels(tmp_path):
    from workbench.training.stage import trainer_kwargs

    assert trainer_kwargs({"trainer": {"accelerator": "cpu"}})["deterministic"] is True   # the default on CPU
    assert trainer_kwargs({"trainer": {"accelerator": "cpu", "deterministic": False}})["deterministic"] is False
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.deterministic)
    flags: list = []
    initial, first = _train_once(tmp_path, "a", flags)
    _, second = _train_once(tmp_path, "b", flags)
    assert not torch.equal(initial["conv3.0.weight"], first["conv3.0.weight"])  # it trained
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert flags == [(True, True), (True, True)]   # torch's and oneDNN's deterministic kernels while training
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.deterministic) == before  # restored
