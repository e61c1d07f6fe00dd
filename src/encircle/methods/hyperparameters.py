"""A method's hyperparameters, read from the one place it declares them: its ``__init__``.

Every method declares its hyperparameters once, as the keyword-only parameters of its
``__init__`` (after ``net`` and ``num_classes``), each with a type annotation, a default
and a one-line entry in the class docstring's ``Args:`` section (a method that extends
another passes ``**kwargs`` on and inherits that one's declaration)::

    class DeepSVDD(Method):
        '''...
        Args:
            objective: ``"one-class"`` (Eq. 4) or ``"soft-boundary"`` (Eq. 3).
            nu: soft-boundary trade-off in ``(0, 1]``.
        '''
        def __init__(self, net, num_classes=1, *, objective: Literal["one-class", "soft-boundary"] = "one-class",
                     nu: float = 0.1) -> None: ...

:func:`hyperparameters` turns that into :class:`Hyperparameter` records, from which
everything else is derived: the ``method.*`` config keys and their type checks
(:mod:`encircle.config`), the CLI's ``--set method.KEY=VALUE``, TOML files, ``encircle
list`` and the estimators' ``__init__`` signatures. A declaration missing a type, a
default or its docstring line is refused when the method is registered, so a new method
cannot skip them.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from encircle.errors import ConfigError

#: Types a hyperparameter may have (besides ``Literal`` choices of strings).
SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Hyperparameter:
    """One declared hyperparameter: ``name: annotation = default`` and its docstring line."""

    name: str
    annotation: Any
    default: Any
    doc: str

    def type_name(self) -> str:
        """A short readable type: ``float``, ``int``, ``bool``, ``str``, ``list of int``,
        or the choices of a ``Literal``."""
        if typing.get_origin(self.annotation) is Literal:
            return " | ".join(repr(c) for c in typing.get_args(self.annotation))
        if typing.get_origin(self.annotation) is tuple:
            return f"list of {typing.get_args(self.annotation)[0].__name__}"
        return str(self.annotation.__name__)

    def check(self, value: Any, key: str | None = None) -> Any:
        """``value`` checked against the annotation (ints widen to floats, lists become
        tuples); a wrong type or an unknown choice is a :class:`ConfigError` naming ``key``."""
        return coerce(key or f"method.{self.name}", value, self.annotation)


def hyperparameters(method_class: type) -> tuple[Hyperparameter, ...]:
    """The hyperparameters ``method_class`` declares, in signature order.

    Raises:
        ConfigError: a keyword-only parameter without an annotation of a supported type,
            a default, or a line in the class docstring's ``Args:`` section.
    """
    cached = method_class.__dict__.get("_hyperparameters")
    if cached is not None:
        return tuple(cached)
    signature = inspect.signature(method_class.__init__)  # type: ignore[misc]
    hints = typing.get_type_hints(method_class.__init__)  # type: ignore[misc]
    docs = _argument_docs(inspect.getdoc(method_class) or "")
    declared: list[Hyperparameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:  # **kwargs: the parent's hyperparameters
            parent = _parent_method(method_class)
            names = {h.name for h in declared}
            declared.extend(h for h in hyperparameters(parent) if h.name not in names)
            continue
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        where = f"{method_class.__name__}.__init__ parameter {parameter.name!r}"
        if parameter.default is inspect.Parameter.empty:
            raise ConfigError(f"{where} needs a default value")
        annotation = hints.get(parameter.name)
        if not _supported(annotation):
            raise ConfigError(f"{where} needs a type annotation (bool, int, float, str, tuple[int, ...] or Literal)")
        if parameter.name not in docs:
            raise ConfigError(f"{where} needs a line in the class docstring's Args: section")
        declared.append(Hyperparameter(parameter.name, annotation, parameter.default, docs[parameter.name]))
    result = tuple(declared)
    method_class._hyperparameters = result  # type: ignore[attr-defined]
    return result


def _parent_method(method_class: type) -> type:
    """The nearest base class with an ``__init__`` of its own (where ``**kwargs`` goes)."""
    for base in method_class.__mro__[1:]:
        if "__init__" in base.__dict__:
            return base
    raise ConfigError(f"{method_class.__name__} passes **kwargs but no base class declares hyperparameters")


def defaults(method_class: type) -> dict[str, Any]:
    """``{name: default}`` of every hyperparameter of ``method_class``."""
    return {h.name: h.default for h in hyperparameters(method_class)}


def _supported(annotation: Any) -> bool:
    if annotation in SCALARS:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    return origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float)


def _argument_docs(docstring: str) -> dict[str, str]:
    """``{name: first line}`` of a Google-style ``Args:`` section; ``a, b: text`` documents both."""
    docs: dict[str, str] = {}
    lines = docstring.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return docs
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"\s*([\w, ]+):\s*(.*)", line) if depth == indent else None
        if match:
            for name in match.group(1).split(","):
                docs[name.strip()] = match.group(2).strip()
    return docs


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against ``annotation`` (bool, int, float, str, tuple[int | float, ...],
    Literal of strings); ints widen to floats and lists become tuples.

    Raises:
        ConfigError: naming ``key``, what was expected and what was got.
    """
    origin = typing.get_origin(annotation)
    if annotation is bool:
        _require(isinstance(value, bool), key, "true or false", value)
    elif annotation is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif annotation is float:
        _require(_is_number(value), key, "a number", value)
        value = float(value)
    elif annotation is str:
        _require(isinstance(value, str), key, "a string", value)
    elif origin is Literal:
        choices = typing.get_args(annotation)
        _require(value in choices, key, f"one of {', '.join(map(repr, choices))}", value)
    elif origin is tuple:
        item = typing.get_args(annotation)[0]
        items = list(value) if isinstance(value, list | tuple) else [value]
        if item is float:
            _require(all(map(_is_number, items)), key, "a number or a list of numbers", value)
            items = [float(v) for v in items]
        else:
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in items)
            _require(ok, key, "an integer or a list of integers", value)
        value = tuple(items)
    else:  # pragma: no cover - a new field type needs a rule here
        raise ConfigError(f"{key}: no rule for values of type {annotation}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(ok: bool, key: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {got!r}")
