"""Name → class registries for methods and weightings (one explicit mapping per family)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry key that does not exist; the message names the closest known key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """An explicit mapping from registry key to class, with helpful lookup errors.

    >>> registry: Registry[object] = Registry("example")
    >>> @registry.register("thing")
    ... class Thing:
    ...     pass
    >>> registry.names()
    ['thing']
    >>> try:
    ...     registry.create("thimg")
    ... except KeyError as error:
    ...     print(error)
    Unknown example 'thimg'. Did you mean 'thing'? Known: thing.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator adding the class under ``name`` (its lower-case paper name)."""

        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.family} {name!r} is already registered.")
            self._classes[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        """Every registered key, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a KeyError with the closest key otherwise."""
        try:
            return self._classes[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._classes, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.family} {name!r}.{hint} Known: {', '.join(self.names())}."
            ) from None

    def create(self, name: str, **options: Any) -> T:
        """Build the class registered as ``name`` with its keyword options."""
        return self.get(name)(**options)
