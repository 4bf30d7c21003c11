"""Name -> implementation registries, so a new algorithm, dataset or model is one file.

A leaf module: `config` looks names up here at validation time, and the algorithm, dataset and
model packages register into it when imported, so imports run one way (never algorithms ->
config -> algorithms). A registry fills itself on its first lookup by importing its package
(which imports every module in it, then the user's plugins).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from workbench.core.errors import ConfigError

if TYPE_CHECKING:
    from workbench.core.algorithms.base import Algorithm
    from workbench.core.tasks.base import DatasetSpec

T = TypeVar("T")


class Registry(Generic[T]):
    """A small ordered mapping with a decorator and a lookup whose error lists what exists."""

    def __init__(self, kind: str, key: str, fill: str | None = None) -> None:
        self.kind = kind
        self.key = key  # config key reported in errors, e.g. "algorithm.name"
        self._items: dict[str, T] = {}
        self._fill = fill  # the package whose import registers the built-in entries

    def _filled(self) -> dict[str, T]:
        if self._fill is not None:
            module, self._fill = self._fill, None  # once; an import in progress is not redone
            importlib.import_module(module)
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        items = self._filled()
        try:
            return items[name]
        except KeyError:
            allowed = ", ".join(items) or "(none registered)"
            raise ConfigError(
                self.key, f"unknown {self.kind} {name!r}; allowed: {allowed}"
            ) from None

    def names(self) -> list[str]:
        return list(self._filled())

    def __contains__(self, name: object) -> bool:
        return name in self._filled()

    def __iter__(self) -> Iterator[str]:
        return iter(self._filled())


def import_all(package: str, path: list[str], first: tuple[str, ...] = ()) -> None:
    """Import every module of a package (`first` in that order, then the rest by name), so
    that adding an algorithm, dataset or model is adding its file."""
    import pkgutil

    found = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    for name in [*first, *(n for n in found if n not in first)]:
        importlib.import_module(f"{package}.{name}")


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", "algorithm.name", "workbench.core.algorithms"
)
DATASETS: Registry[DatasetSpec] = Registry("dataset", "dataset.name", "workbench.core.tasks")
# name -> builder(ModelConfig, input_shape, out_dim) -> nn.Module
MODELS: Registry[Callable[..., Any]] = Registry("model", "model.name", "workbench.core.models")
