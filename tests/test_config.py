"""Config schemas: one home for defaults, YAML that agrees with it, and errors that name the key and the fix."""

import ast
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from conftest import ROOT, compose_config
from workbench.config import ConfigError, bounded, defaults, parse, to_dict
from workbench.stages import STAGES, stage_order


@dataclass
class _Inner:
    method: Literal["spearman", "pearson"] = "spearman"
    n_bootstrap: int = bounded(100, min=0)


@dataclass
class _Outer:
    layers: list[str] | None = None
    sizes: list[int | float] = field(default_factory=lambda: [0.05, 10])
    inner: _Inner = field(default_factory=_Inner)


def test_parse_fills_defaults_and_keeps_ints_and_floats_apart():
    cfg = parse(_Outer, {"inner": {"n_bootstrap": 5}, "sizes": [3, 0.5]}, "x")
    assert cfg.inner == _Inner("spearman", 5) and cfg.layers is None
    assert cfg.sizes == [3, 0.5] and isinstance(cfg.sizes[0], int)
    assert to_dict(cfg) == {"layers": None, "sizes": [3, 0.5], "inner": {"method": "spearman", "n_bootstrap": 5}}


@pytest.mark.parametrize("given, words", [
    ({"inner": {"n_bootstap": 5}}, ["x.inner", "'n_bootstap'", "did you mean 'n_bootstrap'", "valid keys"]),
    ({"innr": {}}, ["'innr'", "did you mean 'inner'"]),
    ({"inner": {"method": "spearmann"}}, ["x.inner.method", "'spearman', 'pearson'", "did you mean 'spearman'"]),
    ({"inner": {"n_bootstrap": -1}}, ["x.inner.n_bootstrap", ">= 0"]),
    ({"inner": {"n_bootstrap": "many"}}, ["x.inner.n_bootstrap", "integer"]),
    ({"layers": "conv3"}, ["x.layers", "list"]),
    ({"inner": 3}, ["x.inner", "mapping"]),
])
def test_parse_errors_name_the_key_and_the_fix(given, words):
    with pytest.raises(ConfigError) as err:
        parse(_Outer, given, "x")
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def _schema_stages():
    return [name for name in stage_order() if STAGES.get(name).config is not None and
            (ROOT / "configs" / STAGES.get(name).key / "default.yaml").exists()]


@pytest.mark.parametrize("stage", ["extract", "topography", "align", "attribute", "intervene", "synthesize", "report"])
def test_every_builtin_stage_has_a_schema_and_a_default_yaml(stage):
    assert stage in _schema_stages()


@pytest.mark.parametrize("stage", _schema_stages())
def test_yaml_defaults_agree_with_the_schema(stage):
    """configs/<section>/default.yaml documents every key with the schema's default: the two never disagree."""
    spec = STAGES.get(stage)
    schema = spec.resolve_config()
    text = yaml.safe_load((ROOT / "configs" / spec.key / "default.yaml").read_text()) or {}
    text.pop("defaults", None)
    expected = defaults(schema)
    assert to_dict(parse(schema, text, spec.key)) == expected
    missing = _missing_keys(expected, text)
    assert not missing, f"configs/{spec.key}/default.yaml does not document {missing}"


@pytest.mark.parametrize("stage", _schema_stages())
def test_tiny_yaml_starts_from_the_defaults_and_overrides_only_what_differs(stage):
    """configs/<section>/tiny.yaml inherits default.yaml (so every key can still be overridden on the command line
    under preset=tiny) and restates no default."""
    spec = STAGES.get(stage)
    path = ROOT / "configs" / spec.key / "tiny.yaml"
    if not path.exists():
        pytest.skip(f"no tiny settings for {spec.key}: preset=tiny uses its defaults")
    tiny = yaml.safe_load(path.read_text()) or {}
    assert tiny.pop("defaults", None) == ["default"], f"{path} should start with `defaults: [default]`"
    restated = _restated(defaults(spec.resolve_config()), tiny)
    assert not restated, f"{path} restates defaults {restated}"


def _restated(base, given, prefix=""):
    out = []
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and base[key]:
            out += _restated(base[key], value, f"{prefix}{key}.")
        elif key in base and base[key] == value:
            out.append(prefix + key)
    return out


def _missing_keys(expected, given, prefix=""):
    out = []
    for key, value in expected.items():
        if key not in given:
            out.append(prefix + key)
        elif isinstance(value, dict) and value and isinstance(given[key], dict):
            out += _missing_keys(value, given[key], f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("study", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_every_study_resolves_against_the_schemas(study, preset):
    from workbench.pipeline import resolve_config

    overrides = ["run_dir=x", "sweep_dir=y"] + ([f"preset={preset}"] if preset else [])
    cfg = resolve_config(compose_config(overrides, experiment=study))
    assert cfg["study"] == study


@pytest.mark.parametrize("model", sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml")))
def test_every_model_config_validates(model):
    from workbench.models import validate_model_config

    validate_model_config(yaml.safe_load((ROOT / "configs" / "model" / f"{model}.yaml").read_text()))


def test_typos_in_a_stage_section_name_the_nearest_key(tiny_config):
    from workbench.pipeline import resolve_config

    bad = dict(tiny_config, align={**tiny_config["align"], "layerz": None})
    with pytest.raises(ConfigError, match=r"'layerz' in align \(did you mean 'layers'\?\)"):
        resolve_config(bad)
    with pytest.raises(ConfigError, match=r"unknown top-level config key 'alignn' \(did you mean 'align'\?\)"):
        resolve_config(dict(tiny_config, alignn={}))
    with pytest.raises(ConfigError, match=r"unknown stage 'algn' in `stages` \(did you mean 'align'\?\)"):
        resolve_config(dict(tiny_config, stages=["algn"]))
    with pytest.raises(ConfigError, match=r"did you mean 'small_cnn'"):
        resolve_config(dict(tiny_config, model={**tiny_config["model"], "name": "smal_cnn"}))


# -- the stage layer's shape -----------------------------------------------------------------------------------------

def test_no_stage_imports_the_pipeline():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "workbench").glob("*/*.py")
                 if re.search(r"workbench\.pipeline|from workbench import pipeline", p.read_text())
]
    assert not offenders, f"stage packages import workbench.pipeline: {offenders}"


MAX_FUNCTION_LINES = 80
# A function may be longer when a comment in it starts with "# long:" and says why.


def test_no_function_is_longer_than_80_lines_without_a_reason():
    long = []
    for path in sorted((ROOT / "workbench").rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                body = lines[node.lineno - 1:node.end_lineno]
                if n > MAX_FUNCTION_LINES and not any(line.strip().startswith("# long:") for line in body):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines (split them, or say why in a '# long:' comment):\n" + "\n".join(long)


def test_the_registries_exist_at_every_extension_point():
    from workbench.alignment import METRICS
    from workbench.attribution import METHODS
    from workbench.data import RDM_SETS, RESPONSES, STIMULUS_SETS
    from workbench.intervention import SELECTIONS
    from workbench.models import MODELS
    from workbench.registry import Registry
    from workbench.training.losses import LOSSES

    for registry in (METRICS, METHODS, RDM_SETS, RESPONSES, STIMULUS_SETS, SELECTIONS, MODELS, LOSSES, STAGES):
        assert isinstance(registry, Registry) and len(registry) > 0, registry
        for name in registry.names():
            if registry is not STAGES:
                assert registry.citations(name), f"{registry.kind} {name!r} carries no citation"
    assert {"rsa", "ridge", "pls", "cka"} <= set(METRICS.names())


@pytest.mark.parametrize("section, given, new", [
    ("attribute", {"targets": {"neural_sites": {"session": "201025"}}}, "attribute.targets.neural_sites.dataset"),
    ("attribute", {"targets": {"class": "predicted"}}, "attribute.targets.class_target"),
    ("align", {"regression": {"sessions": ["201025"]}}, "align.settings.ridge"),
    ("intervene", {"v4_session": "210325"}, "intervene.v4_dataset"),
])
def test_a_renamed_key_says_its_new_name(section, given, new):
    schema = STAGES.get(section).resolve_config()
    with pytest.raises(ConfigError, match=f"was renamed: use {re.escape(new)}"):
        parse(schema, given, section)
