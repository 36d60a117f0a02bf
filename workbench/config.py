"""Config schemas: one dataclass per stage section, the single home of its defaults and its validation.

A stage declares its section as a (nested) dataclass; YAML only overrides. ``parse(Schema, mapping, where)`` fills
the defaults and checks every key and value, with errors that name the key, the allowed values and, for a typo, the
nearest valid key:

    @dataclass
    class RSAConfig:
        method: Literal["spearman", "pearson"] = "spearman"
        n_bootstrap: int = field(default=1000, metadata={"min": 0})

    parse(RSAConfig, {"n_bootstap": 10}, "align.rsa")
    # ConfigError: unknown key 'n_bootstap' in align.rsa (did you mean 'n_bootstrap'?); valid keys: method, ...

``field(metadata={"min": x, "max": y})`` bounds a number (``"above": x`` excludes x itself); ``__post_init__`` checks
relations between keys (raise ConfigError there). ``to_dict(instance)`` gives the plain mapping that is written to
the run's config.yaml.

Every number must be finite, and keys named by convention get their bounds without saying so (``CONVENTIONAL_BOUNDS``:
seeds, batch sizes, learning rates, fractions), so a new schema cannot forget them; explicit bounds take precedence.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Mapping, Union

from workbench.registry import nearest


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and how to fix it."""


# (test on the key's name, bounds) for keys whose meaning fixes their range; the first match applies.
SEED_RANGE = {"min": 0, "max": 2**32 - 1}  # numpy's and Lightning's seed range
CONVENTIONAL_BOUNDS: tuple[tuple[Any, dict[str, float]], ...] = (
    (lambda key: key == "seed" or key.endswith("_seed"), SEED_RANGE),
    (lambda key: key == "batch_size" or key.endswith("_batch_size"), {"min": 1}),
    (lambda key: key in ("lr", "learning_rate"), {"above": 0}),
    (lambda key: key.endswith("fraction"), {"min": 0, "max": 1}),
)


def _bounds(key: str, meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """The field's own bounds, else the conventional bounds of its name (``CONVENTIONAL_BOUNDS``)."""
    if any(k in meta for k in ("min", "max", "above")):
        return meta
    for matches, bounds in CONVENTIONAL_BOUNDS:
        if matches(key):
            return {**meta, **bounds}
    return meta


def parse(schema: type, given: Mapping[str, Any] | None, where: str) -> Any:
    """An instance of dataclass ``schema`` from ``given`` (missing keys take the schema's defaults)."""
    if given is None:
        given = {}
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        given = to_dict(given)
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where} should be a mapping of keys to values, got {type(given).__name__} {given!r}")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = [k for k in given if k not in fields]
    if unknown:
        key = unknown[0]
        renamed = getattr(schema, "renamed_keys", {})  # old name -> new name, for configs written before a rename
        if key in renamed:
            raise ConfigError(f"{where}.{key} was renamed: use {where}.{renamed[key]} (see CONTRIBUTING.md, "
                              "'Renamed config keys')")
        raise ConfigError(f"unknown key {key!r} in {where}{nearest(key, fields)}; valid keys: "
                          f"{', '.join(fields)}")
    hints = typing.get_type_hints(schema)
    values = {name: _coerce(hints[name], value, f"{where}.{name}", _bounds(name, fields[name].metadata))
              for name, value in given.items()}
    try:
        return schema(**values)
    except ConfigError as err:  # from __post_init__: say where, once
        message = str(err)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def to_dict(instance: Any) -> Any:
    """Plain dicts/lists of a parsed config (dataclasses and tuples unfolded)."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, Mapping):
        return {k: to_dict(v) for k, v in instance.items()}
    if isinstance(instance, (list, tuple)):
        return [to_dict(v) for v in instance]
    return instance


def defaults(schema: type) -> dict[str, Any]:
    """The schema's defaults as a plain mapping."""
    return to_dict(schema())


def _coerce(tp: Any, value: Any, where: str, meta: Mapping[str, Any] = types.MappingProxyType({})) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # `X | None`: X's own error says it best
            return _coerce(arms[0], value, where, meta)
        errors = []
        for arm in arms:
            try:
                return _coerce(arm, value, where, meta)
            except ConfigError as err:
                message = str(err)
                errors.append(message[len(where):].lstrip(": ") if message.startswith(where) else message)
        raise ConfigError(f"{where}: got {value!r}, which is none of: {'; '.join(errors)}"
                          + ("" if type(None) not in args else "; or null"))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}; got {value!r}"
                              f"{nearest(value, [str(a) for a in args])}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} should be a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} should be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where, meta)


def _scalar(tp: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} should be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} should be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} should be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} should be a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} should be a string, got {value!r}"
                              + (" (quote numbers that are names, e.g. \"201025\")" if isinstance(value, int)
                                 else ""))
    elif isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where} should be a {tp.__name__}, got {value!r}")
    if (("min" in meta and value < meta["min"]) or ("above" in meta and value <= meta["above"])
            or ("max" in meta and value > meta["max"])):
        raise ConfigError(f"{where} must be {_range_text(meta)}, got {value!r}")
    return value


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = [f"{op} {meta[k]}" for k, op in (("min", ">="), ("above", ">"), ("max", "<=")) if k in meta]
    return " and ".join(parts)


def bounded(default: Any, *, min: float | None = None, max: float | None = None,  # noqa: A002
            above: float | None = None) -> Any:
    """A dataclass field with numeric bounds checked by ``parse`` (``above``: an exclusive minimum)."""
    meta = {k: v for k, v in (("min", min), ("max", max), ("above", above)) if v is not None}
    return dataclasses.field(default=default, metadata=meta)


def default_list(*items: Any) -> Any:
    """A list-valued field with a (copied) default."""
    return dataclasses.field(default_factory=lambda: list(items))


def default_of(factory: Any) -> Any:
    """A field whose default is built by ``factory`` (a nested config, a dict)."""
    return dataclasses.field(default_factory=factory)


def config_dir() -> "Path":
    """The Hydra config folder: ``WORKBENCH_CONFIGS``, else the checkout's configs/ (an editable install)."""
    import os
    from pathlib import Path

    return Path(os.environ.get("WORKBENCH_CONFIGS", Path(__file__).resolve().parents[1] / "configs"))
