"""Named classes registered with a decorator (ReFrame's `@register_launcher`): the launchers and the container
runtimes. The profile schema accepts exactly the registered names. Imports nothing of mlps_slurm."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    def __init__(self, kind: str, name: object, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; registered {self.kind}s: {', '.join(self.known)}"


class ClassRegistry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def register(cls: type[T]) -> type[T]:
            if name in self.classes:
                raise ValueError(f"{self.kind} {name!r} is already registered (by "
                                 f"{self.classes[name].__qualname__})")
            cls.name = name  # type: ignore[attr-defined]
            self.classes[name] = cls
            return cls
        return register

    def names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def get(self, name: str) -> T:
        try:
            cls = self.classes[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownName(self.kind, name, self.names()) from None
        return cls()
