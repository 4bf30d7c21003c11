"""Name -> implementation registries, so a new algorithm, dataset or model is one file plus one line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from workbench.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small ordered mapping with a decorator and a lookup whose error lists what exists."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key  # config key reported in errors, e.g. "algorithm.name"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(self._items) or "(none registered)"
            raise ConfigError(
                self.key, f"unknown {self.kind} {name!r}; allowed: {allowed}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
