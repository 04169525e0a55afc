"""Run a registration when verl imports the module that holds the registry (a leaf module).

verl's registries live in heavy modules (the trainer registry in ``verl.trainer.ppo.v1``, the
engine registry in ``verl.workers.engine``, ...), and ``import verl`` runs verl-sdar's entry point in
every process, most of which never load them. :func:`when_imported` defers a registration to the
moment the registry's module is imported in the process -- before that import returns to whoever
asked for it, so nothing can look the registry up without the entry in it -- and runs it at once
when the module is already there. Nothing of verl is modified: the hook is a ``sys.meta_path``
finder that finds the module exactly as the import system would and, for the one module it
watches, runs the callbacks right after the module's own code (the module's loader is restored
first, so the module looks like any other).

A callback that raises is reported as a failed registration (:func:`verl_sdar.plugin_status.report_failure`:
ERROR log, stderr, and ``check_registered()`` raises it from then on) and fails that import.
This module imports nothing of verl and, of verl_sdar, only :mod:`verl_sdar.plugin_status`.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType

from .plugin_status import report_failure

__all__ = ["pending", "when_imported"]

Callback = Callable[[ModuleType], None]

_lock = threading.RLock()
_hooks: dict[str, list[tuple[str, Callback]]] = {}


def _run(module: ModuleType, callbacks: list[tuple[str, Callback]]) -> None:
    for what, callback in callbacks:
        try:
            callback(module)
        except BaseException as exc:
            report_failure(exc, f"{what} (on importing {module.__name__})")
            raise


class _HookedLoader:
    """The module's own loader, plus the callbacks once its code has run."""

    def __init__(self, loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        self._loader.exec_module(module)
        # The import system binds a submodule to its parent only after this returns; a callback
        # doing ``from parent import child`` must already find it there.
        parent_name, _, child = self._name.rpartition(".")
        parent = sys.modules.get(parent_name) if parent_name else None
        bound = parent is not None and not hasattr(parent, child)
        if bound:
            setattr(parent, child, module)
        with _lock:
            callbacks = _hooks.pop(self._name, [])
        try:
            _run(module, callbacks)
        except BaseException:
            if bound and getattr(parent, child, None) is module:
                delattr(parent, child)  # the import fails: leave the parent as the import system would
            raise


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the watched modules through the other finders and hooks their loaders."""

    def find_spec(self, fullname, path, target=None):
        with _lock:
            if fullname not in _hooks:
                return None
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, _Finder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # a namespace package or a legacy loader: let the caller see it unhooked
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


_finder = _Finder()


def when_imported(name: str, callback: Callback, what: str | None = None) -> None:
    """Call ``callback(module)`` once module ``name`` is imported in this process (now, if it is).

    ``what`` names the registration in error reports (default: the callback's qualified name).
    """
    what = what or getattr(callback, "__qualname__", repr(callback))
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            _hooks.setdefault(name, []).append((what, callback))
            if _finder not in sys.meta_path:
                # Installed once and never removed (with nothing to wait for it answers None at
                # once): removing it could make an import running in another thread, which
                # iterates the same list, skip the finder after it.
                sys.meta_path.insert(0, _finder)
            return
    _run(module, [(what, callback)])


def pending() -> dict[str, list[str]]:
    """The registrations still waiting, by the module they wait for (not imported in this process)."""
    with _lock:
        return {name: [what for what, _ in callbacks] for name, callbacks in _hooks.items()}
