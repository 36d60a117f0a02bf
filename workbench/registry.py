"""Small named registries (the Brain-Score pattern).

A study names datasets, models and methods in YAML; a user adds their own with the decorator, without editing the
package. Each entry carries its citation so that a report can end with the references for everything a run used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    citation: str = ""
    description: str = ""


@dataclass
class Registry(Generic[T]):
    kind: str
    entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(self, name: str, *, citation: str = "", description: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, citation=citation, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, citation: str = "", description: str = "") -> None:
        if name in self.entries and self.entries[name].obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self.entries[name] = Entry(name, obj, citation, description)

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s are: {', '.join(sorted(self.entries))}"
            ) from None

    def citation(self, name: str) -> str:
        return self.entry(name).citation

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: Any) -> bool:
        return name in self.entries


# Citations for methods that several stages use; stages add the keys they used to `metrics["references"]`.
CITATIONS: dict[str, str] = {}


def cite(key: str, text: str) -> str:
    CITATIONS.setdefault(key, text)
    return key
