"""Checked access to one protocol run's ``results.json``, for the bench's row extractors.

Every accessor takes the path of keys to a value and the kind expected there; a missing
key or a value of another type is a :class:`~encircle.errors.DataError` that names the
protocol, the whole key path and what was found, e.g. ``osr results.json: expected
metrics.mean_auroc (a number), no 'metrics.mean_auroc'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from encircle.errors import DataError


class CheckedResults:
    """A protocol's ``results.json`` (already parsed) with typed, checked lookups."""

    def __init__(self, protocol: str, data: Any) -> None:
        self.protocol = protocol
        if not isinstance(data, Mapping):
            raise DataError(f"{protocol} results.json must hold an object, got {type(data).__name__}")
        self.data = data

    def error(self, keys: tuple[str, ...], complaint: str) -> DataError:
        """The error for the value at ``keys``: ``<protocol> results.json: expected <keys> <complaint>``."""
        return DataError(f"{self.protocol} results.json: expected {'.'.join(keys)} {complaint}")

    def get(self, *keys: str, kind: type | tuple[type, ...], expected: str) -> Any:
        """The value at ``keys``, which must be a ``kind`` (``expected`` says so in words)."""
        node: Any = self.data
        for i, key in enumerate(keys):
            if not isinstance(node, Mapping) or key not in node:
                raise self.error(keys, f"({expected}), no {'.'.join(keys[: i + 1])!r}")
            node = node[key]
        if not isinstance(node, kind) or isinstance(node, bool):  # JSON true/false is no number
            raise self.error(keys, f"to be {expected}, got {node!r:.80}")
        return node

    def number(self, *keys: str) -> float:
        """A number (int or float in the file) as a float."""
        return float(self.get(*keys, kind=(int, float), expected="a number"))

    def optional(self, *keys: str) -> float | None:
        """A number, or ``None`` when the last key is absent (a metric a method lacks)."""
        parent = self.mapping(*keys[:-1]) if len(keys) > 1 else self.data
        return self.number(*keys) if keys[-1] in parent else None

    def mapping(self, *keys: str) -> Mapping[str, Any]:
        """An object."""
        return self.get(*keys, kind=Mapping, expected="an object")

    def text(self, *keys: str) -> str:
        """A string."""
        return str(self.get(*keys, kind=str, expected="a string"))

    def records(self, *keys: str) -> list[Mapping[str, Any]]:
        """A list of history records (objects)."""
        return self._items(keys, "a list of history records", _is_record, "to hold objects, got {0!r:.80}")

    def integers(self, *keys: str) -> list[int]:
        """A list of integers."""
        return self._items(keys, "a list of integers", _is_integer, "to be integers, got {0}")

    def _items(self, keys: tuple[str, ...], expected: str, ok: Callable[[Any], bool], complaint: str) -> list[Any]:
        """A list whose every item passes ``ok``; ``complaint`` is formatted with the list otherwise."""
        values = self.get(*keys, kind=list, expected=expected)
        if not all(ok(v) for v in values):
            raise self.error(keys, complaint.format(values))
        return list(values)


def _is_record(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
