"""One plugin mechanism: built-ins by name, third parties by entry point.

A spec string names a plugin and its arguments: ``KIND[:NAME][?OPTION=VALUE&...]``, for example
``sentence-transformers:all-MiniLM-L6-v2``, ``timm:resnet18?pretrained=false`` or ``hashing:64``.
A plugin is a callable ``factory(name: str, options: dict[str, str])`` that returns the object.
Third-party encoders register one under the entry-point group ``latentsearch.encoders``::

    [project.entry-points."latentsearch.encoders"]
    myenc = "my_package.encoder:MyEncoder"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .errors import InvalidInputError, LatentSearchError, UnknownSpecError, unknown_name


@dataclass(frozen=True)
class Spec:
    """A parsed spec string."""

    kind: str
    name: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Spec:
        text = text.strip()
        if not text:
            raise InvalidInputError("an empty spec names nothing; give e.g. 'minilm' or 'hashing'")
        head, _, query = text.partition("?")
        kind, _, name = head.partition(":")
        # Split by hand rather than URL-decode: a '+' or '%' in a file path stays as written.
        options = dict(part.partition("=")[::2] for part in query.split("&") if part)
        return cls(kind=kind.strip().lower(), name=name.strip(), options=options)

    def __str__(self) -> str:
        out = self.kind + (f":{self.name}" if self.name else "")
        if self.options:
            out += "?" + "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return out


@dataclass
class Registry:
    """Factories of one plugin kind, looked up by the kind part of a spec."""

    what: str
    group: str
    builtins: dict[str, str]  # kind -> "module:attribute", imported on first use
    aliases: dict[str, str] = field(default_factory=dict)  # whole spec -> whole spec
    descriptions: dict[str, str] = field(default_factory=dict)
    _plugins: dict[str, Any] | None = None

    def plugins(self) -> dict[str, Any]:
        """Entry points of third-party packages, read once."""
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._plugins

    def names(self) -> list[str]:
        return sorted(set(self.builtins) | set(self.plugins()))

    def resolve(self, text: str) -> Spec:
        """The spec ``text`` names: an alias stands for its whole spec, and options after an
        alias (``minilm?layer=3``) are added to that spec's own."""
        aliases = {name.lower(): spec for name, spec in self.aliases.items()}
        text = text.strip()
        head, sep, query = text.partition("?")
        if text.lower() not in aliases and sep and head.strip().lower() in aliases:
            spec = Spec.parse(aliases[head.strip().lower()])
            return Spec(spec.kind, spec.name, {**spec.options, **Spec.parse(f"{spec.kind}?{query}").options})
        return Spec.parse(aliases.get(text.lower(), text))

    def factory(self, kind: str) -> Callable[[str, dict[str, str]], Any]:
        if kind in self.builtins:
            module, _, attr = self.builtins[kind].partition(":")
            return getattr(importlib.import_module(module, __package__), attr)
        plugin = self.plugins().get(kind)
        if plugin is None:
            raise unknown_name(self.what, kind, self.names() + sorted(self.aliases))
        try:
            return plugin.load()
        except Exception as exc:  # a broken third-party package must not look like our bug
            raise LatentSearchError(
                f"the {self.what} plugin {kind!r} ({plugin.value}) failed to load: {exc}"
            ) from exc

    def create(self, text: str) -> Any:
        spec = self.resolve(text)
        return self.factory(spec.kind)(spec.name, dict(spec.options))

    def describe(self) -> list[tuple[str, str, str]]:
        """(kind, origin, description) for each registered kind."""
        rows = []
        for kind in self.names():
            if kind in self.builtins:
                rows.append((kind, "built-in", self.descriptions.get(kind, "")))
            else:
                ep = self.plugins()[kind]
                dist = getattr(ep, "dist", None)
                origin = f"plugin ({dist.name})" if dist is not None else "plugin"
                rows.append((kind, origin, ep.value))
        return rows


def pop_bool(options: dict[str, str], key: str, default: bool) -> bool:
    if key not in options:
        return default
    value = options.pop(key).strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidInputError(f"option {key}={value!r} is not a boolean; use true or false")


def pop_int(options: dict[str, str], key: str, default: int) -> int:
    if key not in options:
        return default
    value = options.pop(key)
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"option {key}={value!r} is not an integer") from None


def reject_unknown_options(what: str, options: dict[str, str], known: list[str]) -> None:
    for key in options:
        if not known:
            raise UnknownSpecError(f"{what} takes no options (got {key!r})")
        raise unknown_name(f"{what} option", key, known)
