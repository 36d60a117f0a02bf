"""Named registries: one at every extension point (the Brain-Score pattern).

A study names models, data sets, losses, methods, metrics, lesion selections and stages in YAML; a user adds their
own with the decorator from their own module, without editing the package:

    from workbench.models import MODELS

    @MODELS.register("my_net", citation="Me et al. (2026). My net. Journal 1, 1-2.")
    def my_net(num_classes=10): ...

Each entry carries its citation(s). That is the one citation mechanism of the workbench: a stage cites the entries
it used (``StageContext.cite``), and the report's references are exactly those.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


def nearest(name: Any, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate of a misspelt name, else ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def as_citations(citation: str | Iterable[str] | None) -> tuple[str, ...]:
    if not citation:
        return ()
    if isinstance(citation, str):
        return (citation,)
    return tuple(c for c in citation if c)


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    citations: tuple[str, ...] = ()
    description: str = ""

    @property
    def citation(self) -> str:
        return " ".join(self.citations)


@dataclass
class Registry(Generic[T]):
    kind: str
    entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(self, name: str, *, citation: str | Iterable[str] = "",
                 description: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, citation=citation, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, citation: str | Iterable[str] = "", description: str = "") -> None:
        if name in self.entries and self.entries[name].obj is not obj:
            old = self.entries[name].obj
            # a module imported twice (a plugin re-loaded in a notebook) re-registers the same qualified name
            if getattr(old, "__qualname__", None) != getattr(obj, "__qualname__", object()) or \
                    getattr(old, "__module__", None) != getattr(obj, "__module__", object()):
                raise ValueError(f"{self.kind} {name!r} is already registered (by {_origin(old)}); pick another name")
        self.entries[name] = Entry(name, obj, as_citations(citation), description)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests and notebooks that register throw-away entries)."""
        self.entries.pop(name, None)

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        try:
            return self.entries[name]
        except (KeyError, TypeError):
            raise KeyError(
                f"unknown {self.kind} {name!r}{nearest(name, self.entries)}; registered {self.kind}s are: "
                f"{', '.join(sorted(self.entries)) or 'none'}. Register your own with "
                f"@<REGISTRY>.register({name!r}) in a module named by `plugins: [<module>]`."
            ) from None

    def citation(self, name: str) -> str:
        return self.entry(name).citation

    def citations(self, name: str) -> tuple[str, ...]:
        return self.entry(name).citations

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: Any) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries)


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
