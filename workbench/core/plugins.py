"""The user's own algorithms, datasets and models, loaded into the registries.

Two ways in, both loaded once, when a registry is first imported:
- a Python entry point of the user's package: `[project.entry-points."workbench.algorithms"]`
  (likewise `workbench.datasets`, `workbench.models`) naming a module, which registers what
  it defines on import (`@ALGORITHMS.register("my-algo")`);
- a file in the plugins folder: `$WORKBENCH_PLUGINS` (several, separated by the path
  separator), else `plugins/` in the user's config folder; every `*.py` there is imported.

What a plugin may rely on is `workbench.plugin_api` (one module, documented there). A plugin
that fails to import, or registers something that breaks the interface, is left out and
reported in one line naming its file (`problems()`); the app and the CLI start all the same.
Each loaded plugin is recorded (`loaded()`: its file and sha256, or its distribution and
version), and a run made with a plugin's algorithm records which one (`provenance(name)`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)
PLUGINS_ENV = "WORKBENCH_PLUGINS"
GROUPS = ("workbench.algorithms", "workbench.datasets", "workbench.models")


@dataclass(frozen=True)
class Plugin:
    name: str  # the module name it was imported as
    source: str  # its file, or "<distribution> <version>" for an entry point
    sha256: str  # of the file ("" for an entry point: the version says which code)
    registered: tuple[str, ...]  # "algorithm:my-algo", ...


_loaded: list[Plugin] = []
_problems: list[str] = []
_done = False


def plugin_dirs() -> list[Path]:
    """Where plugin files are looked for: $WORKBENCH_PLUGINS, else the user config folder's."""
    text = os.environ.get(PLUGINS_ENV)
    if text is not None:
        return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]
    import platformdirs

    return [Path(platformdirs.user_config_dir("meta-learning-workbench")) / "plugins"]


def load_plugins() -> None:
    """Import every plugin once (entry points, then files); never raises."""
    global _done
    if _done:
        return
    _done = True
    for group in GROUPS:
        try:
            points = list(metadata.entry_points(group=group))
        except Exception as exc:  # a broken installed distribution: said, not fatal
            _problems.append(f"entry points {group}: {_line(exc)}")
            log.warning("%s", _problems[-1])
            continue
        for ep in points:
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else ep.value
            _import(ep.value.split(":")[0], source, "", lambda ep=ep: ep.load())
    for folder in plugin_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            name = f"workbench_plugin_{path.stem.replace('-', '_')}"
            _import(name, str(path), _sha256(path), lambda p=path, n=name: _import_file(n, p))


def _import(name: str, source: str, sha: str, load: object) -> None:
    before = _registered()
    try:
        load()  # type: ignore[operator]
        added = tuple(sorted(_registered() - before))
        for kind_name in added:
            _check(kind_name)
    except Exception as exc:  # SyntaxError, ImportError, a broken interface, anything
        _unregister(_registered() - before)
        sys.modules.pop(name, None)
        _problems.append(f"plugin {source} left out: {_line(exc)}")
        log.warning("%s", _problems[-1])  # the CLI's stderr, the app's log pane
        return
    _loaded.append(Plugin(name, source, sha, added))


def _import_file(name: str, path: Path) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _registries() -> dict[str, object]:
    from workbench.core.registry import ALGORITHMS, DATASETS, MODELS

    return {"algorithm": ALGORITHMS, "dataset": DATASETS, "model": MODELS}


def _registered() -> set[str]:
    return {f"{kind}:{n}" for kind, reg in _registries().items() for n in reg.names()}  # type: ignore[attr-defined]


def _unregister(names: set[str]) -> None:
    regs = _registries()
    for kind_name in names:
        kind, _, name = kind_name.partition(":")
        regs[kind]._items.pop(name, None)  # type: ignore[attr-defined]


def _check(kind_name: str) -> None:
    """What the engine and the form will use of a plugin's registration, checked now (a
    TypeError naming what is wrong), so a broken plugin fails here, not in a run."""
    from workbench.core.params import AlgorithmParams

    kind, _, name = kind_name.partition(":")
    obj = _registries()[kind].get(name)  # type: ignore[attr-defined]
    if kind == "algorithm":
        from workbench.core.algorithms.base import Algorithm

        if not (isinstance(obj, type) and issubclass(obj, Algorithm)):
            raise TypeError(
                f"algorithm {name!r} is not a subclass of workbench.plugin_api.Algorithm"
            )
        params = getattr(obj, "Params", None)
        if not (isinstance(params, type) and issubclass(params, AlgorithmParams)):
            raise TypeError(f"algorithm {name!r} has no Params (a subclass of AlgorithmParams)")
        field = params.model_fields.get("name")
        if field is None or field.default != name:
            raise TypeError(f"algorithm {name!r}: its Params must have name = {name!r} by default")
        for method in ("meta_train_step", "evaluate"):
            if getattr(obj, method) is getattr(Algorithm, method):
                raise TypeError(f"algorithm {name!r} does not implement {method}")
    elif kind == "dataset" and not hasattr(obj, "build"):
        raise TypeError(f"dataset {name!r} has no build(cfg, split)")
    elif kind == "model" and not callable(obj):
        raise TypeError(f"model {name!r} is not a builder function")


def loaded() -> list[Plugin]:
    load_plugins()
    return list(_loaded)


def problems() -> list[str]:
    """One line per plugin left out, naming its file (or distribution) and why."""
    load_plugins()
    return list(_problems)


def provenance(kind: str, name: str) -> dict[str, str] | None:
    """Which plugin registered `kind:name` (its file and sha256, or distribution and
    version); None for a built-in."""
    for p in loaded():
        if f"{kind}:{name}" in p.registered:
            return {"plugin": p.name, "source": p.source, "sha256": p.sha256}
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
