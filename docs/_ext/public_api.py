"""What the API reference documents: every module of the package and the public objects each one owns.

Shared by the Sphinx extension that writes the reference pages and by the test that checks docstrings, so the
two cannot disagree about what "public" means. An object is documented once, under its public path: the
outermost package whose ``__all__`` exports it, else the module that defines it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from types import ModuleType

PACKAGE = "lightning_hypergrad"
SKIPPED_MODULES = {f"{PACKAGE}.__main__"}


@dataclass(frozen=True)
class PublicObject:
    """One documented object: ``name`` inside ``module`` (its public path), and the object itself."""

    module: str
    name: str
    obj: object

    @property
    def path(self) -> str:
        """The dotted path users import it by."""
        return f"{self.module}.{self.name}"


def modules() -> list[ModuleType]:
    """Every importable module of the package, packages before their contents, private ones left out."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{PACKAGE}.")]
    public = [name for name in names if name not in SKIPPED_MODULES and not _has_private_part(name)]
    return [importlib.import_module(name) for name in sorted(public)]


def _has_private_part(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def _candidates(module: ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return [name for name in module.__all__ if not inspect.ismodule(getattr(module, name))]
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    ]


def public_objects() -> dict[str, list[PublicObject]]:
    """For each module name, the objects documented on its page, in source or ``__all__`` order."""
    found: dict[str, list[PublicObject]] = {}
    placed: set[int] = set()
    # Modules with __all__ claim their exports first, outermost first; defining modules get what is left.
    claim_order = sorted(modules(), key=lambda module: (not hasattr(module, "__all__"), module.__name__.count(".")))
    for module in claim_order:
        owned = []
        for name in _candidates(module):
            obj = getattr(module, name)
            if id(obj) in placed:
                continue
            placed.add(id(obj))
            owned.append(PublicObject(module.__name__, name, obj))
        found[module.__name__] = owned
    return {name: found[name] for name in sorted(found)}


def public_methods(cls: type) -> dict[str, object]:
    """The public methods and properties a class of this package defines itself or inherits from the package."""
    members: dict[str, object] = {}
    for owner in reversed(cls.__mro__):
        if not owner.__module__.startswith(PACKAGE):
            continue
        for name, member in vars(owner).items():
            if name.startswith("_") or not _is_routine(member):
                continue
            members[name] = member
    return members


def _is_routine(member: object) -> bool:
    return isinstance(member, (staticmethod, classmethod, property)) or inspect.isfunction(member)


def overrides_external(cls: type, name: str) -> bool:
    """Whether ``name`` overrides a method of a base class outside this package (a Lightning or torch hook)."""
    return any(not base.__module__.startswith(PACKAGE) and name in vars(base) for base in cls.__mro__[1:])
