"""A small, safe expression language for ``when:``, ``for_each:`` and ``${{ ... }}`` templates.

Why our own and not ``eval``, simpleeval or JMESPath: we need (1) no path from an
expression to Python objects, (2) static analysis before a run starts, so a reference
to an unknown step output is a 422 at definition time, and (3) a syntax operators
already read (``steps.fetch.output.count > 3 and params.region == "eu"``). JMESPath
gives (1) and (2) but writes literals in backticks; simpleeval evaluates Python
attributes on live objects, and its sandbox has needed fixes over the years. So:
Python's own parser produces the tree (``ast.parse(mode="eval")``, no code is ever
compiled or run), a whitelist rejects every node kind we do not interpret, and a
tiny interpreter walks what is left over plain JSON values.

- ``a.b`` and ``a["b"]`` read a key of a JSON object (never a Python attribute);
  ``a[0]``, ``a[-1]``, ``a[1:3]`` index lists and strings.
- literals: numbers, strings, ``true``/``false``/``null`` (and Python's spellings),
  lists and objects; ``and``/``or``/``not``; ``== != < <= > >= in not in``;
  ``+ - * / // %``; ``x if cond else y``.
- functions: see ``FUNCTIONS``. No keyword arguments, no lambdas, no comprehensions.
- limits: 2,000 characters of source, 300 syntax nodes, results of at most
  100,000 characters or items, so a definition cannot make the engine spin.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_SOURCE = 2000
MAX_NODES = 300
MAX_SIZE = 100_000
TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}


class ExpressionError(ValueError):
    """An expression that does not parse, or fails when evaluated (with the reason)."""


def _size(value: Any) -> Any:
    if isinstance(value, str | list | dict) and len(value) > MAX_SIZE:
        raise ExpressionError(f"result larger than {MAX_SIZE} characters or items")
    return value


def _len(x: Any) -> int:
    if not isinstance(x, str | list | dict):
        raise ExpressionError(f"len() of {type(x).__name__}")
    return len(x)


def _range(*args: Any) -> list[int]:
    if (
        not all(isinstance(a, int) and not isinstance(a, bool) for a in args)
        or not 1 <= len(args) <= 3
    ):
        raise ExpressionError("range() takes 1 to 3 integers")
    r = range(*args)
    if len(r) > 10_000:
        raise ExpressionError("range() longer than 10000")
    return list(r)


def _get(obj: Any, key: Any, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    if isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
        return obj[key]
    return default


def _str_method(name: str) -> Callable[..., Any]:
    def method(s: Any, *args: Any) -> Any:
        if not isinstance(s, str):
            raise ExpressionError(f"{name}() needs a string, got {type(s).__name__}")
        return _size(getattr(s, name)(*args))

    return method


def _join(items: Any, sep: Any = "") -> str:
    if not isinstance(items, list) or not isinstance(sep, str):
        raise ExpressionError("join(list, separator)")
    joined = sep.join(i if isinstance(i, str) else json.dumps(i) for i in items)
    _size(joined)
    return joined


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _len,
    "str": lambda x: str(x) if isinstance(x, str) else json.dumps(x),
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "min": lambda *a: min(a[0]) if len(a) == 1 else min(a),
    "max": lambda *a: max(a[0]) if len(a) == 1 else max(a),
    "sum": sum,
    "round": round,
    "sorted": sorted,
    "range": _range,
    "get": _get,
    "keys": lambda d: list(d) if isinstance(d, dict) else _fail("keys() needs an object"),
    "values": lambda d: (
        list(d.values()) if isinstance(d, dict) else _fail("values() needs an object")
    ),
    "lower": _str_method("lower"),
    "upper": _str_method("upper"),
    "strip": _str_method("strip"),
    "split": _str_method("split"),
    "replace": _str_method("replace"),
    "startswith": _str_method("startswith"),
    "endswith": _str_method("endswith"),
    "join": _join,
    "json": lambda x: _size(json.dumps(x, sort_keys=True)),
}


def _fail(message: str) -> Any:
    raise ExpressionError(message)


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Compare, ast.IfExp, ast.Name, ast.Load, ast.Attribute, ast.Subscript,
    ast.Slice, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Call,
    *_BINOPS, *_CMPOPS,
)  # fmt: skip


@dataclass(frozen=True)
class Expression:
    """A parsed, whitelisted expression; ``evaluate`` it against a namespace of JSON values."""

    source: str
    tree: ast.Expression

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        try:
            return _eval(self.tree.body, names)
        except ExpressionError as exc:
            raise ExpressionError(f"{self.source.strip()!r}: {exc}") from None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as exc:
            raise ExpressionError(f"{self.source.strip()!r}: {exc}") from None

    def names(self) -> set[str]:
        """Root names the expression reads (``params``, ``steps``, ...), constants excluded."""
        return {
            n.id
            for n in ast.walk(self.tree)
            if isinstance(n, ast.Name)
            and n.id.lower() not in CONSTANTS
            and n.id not in ("True", "False", "None")
            and not _is_function(n, self.tree)
        }

    def step_refs(self) -> Iterator[tuple[str, str | None]]:
        """``(step_id, field)`` for each ``steps.<id>.<field>`` read; field None if dynamic."""
        for node in ast.walk(self.tree):
            path = _static_path(node)
            if path and path[0] == "steps" and len(path) >= 2:
                # only report maximal chains: the parent node holds the longer path
                yield path[1], path[2] if len(path) >= 3 else None


def _is_function(name: ast.Name, tree: ast.Expression) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _static_path(node: ast.AST) -> list[str] | None:
    """``steps.a.output`` → ["steps", "a", "output"]; None when not a constant key chain."""
    keys: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            keys.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            keys.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            keys.append(node.id)
            return keys[::-1]
        else:
            return None


@lru_cache(maxsize=4096)
def parse(source: str) -> Expression:
    """Parse and whitelist; raises ExpressionError naming the first offending construct."""
    if not isinstance(source, str):
        raise ExpressionError("an expression must be a string")
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"longer than {MAX_SOURCE} characters")
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not a valid expression: {exc.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"more than {MAX_NODES} syntax nodes")
    for node in nodes:
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                raise ExpressionError(
                    f"{text!r}: method calls are not allowed; write "
                    f"{node.func.attr}(value, ...) instead of value.{node.func.attr}(...)"
                )
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else "this"
                raise ExpressionError(
                    f"{text!r}: unknown function {what!r}; functions are {sorted(FUNCTIONS)}"
                )
            if node.keywords:
                raise ExpressionError(f"{text!r}: keyword arguments are not allowed")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"{text!r}: names starting with '_' are not allowed")
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, str | int | float | bool | type(None)
        ):
            raise ExpressionError(f"{text!r}: constant {node.value!r} is not allowed")
    return Expression(source, tree)


def _eval(node: ast.AST, names: Mapping[str, Any]) -> Any:
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Name(id=name):
            if name in names:
                return names[name]
            if name.lower() in CONSTANTS:
                return CONSTANTS[name.lower()]
            if name in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[name]
            raise ExpressionError(f"unknown name {name!r}")
        case ast.Attribute(value=value, attr=attr):
            return _index(_eval(value, names), attr)
        case ast.Subscript(value=value, slice=ast.Slice(lower=lo, upper=up, step=st)):
            seq = _eval(value, names)
            if not isinstance(seq, list | str):
                raise ExpressionError(f"cannot slice {type(seq).__name__}")
            bounds = [None if b is None else _eval(b, names) for b in (lo, up, st)]
            return seq[slice(*bounds)]
        case ast.Subscript(value=value, slice=key):
            return _index(_eval(value, names), _eval(key, names))
        case ast.BoolOp(op=ast.And(), values=values):
            result: Any = True
            for v in values:
                result = _eval(v, names)
                if not result:
                    return result
            return result
        case ast.BoolOp(op=ast.Or(), values=values):
            result = False
            for v in values:
                result = _eval(v, names)
                if result:
                    return result
            return result
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not _eval(operand, names)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_number(_eval(operand, names))
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return +_number(_eval(operand, names))
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _eval(left, names), _eval(right, names)
            if isinstance(op, ast.Mult):
                seq, n = (a, b) if isinstance(a, str | list) else (b, a)
                if isinstance(seq, str | list) and isinstance(n, int) and len(seq) * n > MAX_SIZE:
                    raise ExpressionError(f"result larger than {MAX_SIZE} characters or items")
            return _size(_BINOPS[type(op)](a, b))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            current = _eval(left, names)
            for cmp, comp in zip(ops, comparators, strict=True):
                nxt = _eval(comp, names)
                if not _CMPOPS[type(cmp)](current, nxt):
                    return False
                current = nxt
            return True
        case ast.IfExp(test=test, body=body, orelse=orelse):
            return _eval(body, names) if _eval(test, names) else _eval(orelse, names)
        case ast.List(elts=elts) | ast.Tuple(elts=elts):
            return [_eval(e, names) for e in elts]
        case ast.Dict(keys=keys, values=values):
            out = {}
            for k, v in zip(keys, values, strict=True):
                if k is None:
                    raise ExpressionError("'**' in an object literal is not allowed")
                key = _eval(k, names)
                if not isinstance(key, str):
                    raise ExpressionError("object keys must be strings")
                out[key] = _eval(v, names)
            return out
        case ast.Call(func=ast.Name(id=fname), args=args):
            return _size(FUNCTIONS[fname](*[_eval(a, names) for a in args]))
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # pragma: no cover


def _number(x: Any) -> Any:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ExpressionError(f"expected a number, got {type(x).__name__}")
    return x


def _index(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        if key not in container:
            raise ExpressionError(f"no key {key!r} (keys: {sorted(map(str, container))[:10]})")
        return container[key]
    if isinstance(container, list | str):
        if isinstance(key, bool) or not isinstance(key, int):
            raise ExpressionError(f"a list index must be an integer, not {key!r}")
        if not -len(container) <= key < len(container):
            raise ExpressionError(f"index {key} out of range (length {len(container)})")
        return container[key]
    raise ExpressionError(f"cannot read {key!r} of {json.dumps(container)[:40]}")


# -- templates --------------------------------------------------------------------------


def template_expressions(value: Any) -> Iterator[tuple[str, Expression]]:
    """Every ``${{ ... }}`` inside a JSON value, with its path (``a.b[0]``); parses each."""
    yield from _walk_templates(value, "")


def _walk_templates(value: Any, path: str) -> Iterator[tuple[str, Expression]]:
    if isinstance(value, str):
        for m in TEMPLATE.finditer(value):
            yield path, parse(m.group(1))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_templates(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_templates(v, f"{path}[{i}]")


def render(value: Any, names: Mapping[str, Any]) -> Any:
    """Substitute templates. A string that is exactly one ``${{ x }}`` takes x's JSON type;
    otherwise each template is formatted into the string."""
    if isinstance(value, str):
        m = TEMPLATE.fullmatch(value.strip())
        if m and value.count("${{") == 1:
            return parse(m.group(1)).evaluate(names)
        if "${{" not in value:
            return value
        return _size(TEMPLATE.sub(lambda mm: _as_text(parse(mm.group(1)).evaluate(names)), value))
    if isinstance(value, dict):
        return {k: render(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, names) for v in value]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def condition(source: str) -> Expression:
    """``when:`` and ``match:`` accept a bare expression or one wrapped in ``${{ }}``."""
    m = TEMPLATE.fullmatch(source.strip())
    return parse(m.group(1) if m else source)
