"""Definition checks before anything is stored or run: schema, DAG, expressions, references.

Every problem becomes a 422 whose ``errors`` name the step and the field
(``{"loc": "steps.charge.retry.max_attempts", "step": "charge", "field": ..., "msg": ...}``),
so the author can fix a 200-line YAML file without guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from typing import Any

import yaml
from pydantic import ValidationError

from ccc.common import Invalid

from . import expr
from .definition import Action, Definition, Step

STEP_FIELDS = frozenset({"output", "status", "error", "attempts", "started_at", "finished_at"})
STEP_NAMES = frozenset({"params", "steps", "run"})
_KNOWN: ContextVar[frozenset[str]] = ContextVar("known_steps", default=frozenset())


class Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, step: str | None, field: str, msg: str, kind: str = "invalid") -> None:
        loc = (f"steps.{step}.{field}" if field != "(step)" else f"steps.{step}") if step else field
        msg = msg.removeprefix("Value error, ")
        entry: dict[str, Any] = {"loc": loc, "field": field, "msg": msg, "type": kind}
        if step:
            entry["step"] = step
        self.errors.append(entry)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        where = "; ".join(
            (f"step {e['step']!r} field {e['field']!r}: " if "step" in e else f"{e['loc']}: ")
            + e["msg"]
            for e in self.errors[:5]
        )
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        raise Invalid(f"invalid workflow definition: {where}{more}", errors=self.errors)


def load_source(source: str) -> Any:
    """YAML (a superset of JSON) text → a document; a syntax error is a 422 with the line."""
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise Invalid(
            f"definition is not valid YAML or JSON{where}: {getattr(exc, 'problem', exc)}",
            errors=[{"loc": "source", "field": "source", "msg": str(exc), "type": "syntax"}],
        ) from None


def parse_definition(document: Any, name: str) -> Definition:
    """Validate a document into a ``Definition`` named ``name``, or raise a naming 422."""
    if not isinstance(document, dict):
        raise Invalid(
            "a workflow definition must be an object with 'steps'",
            errors=[{"loc": "", "field": "", "msg": "expected an object", "type": "object_type"}],
        )
    if document.get("name") not in (None, name):
        raise Invalid(
            f"definition names itself {document.get('name')!r} but is stored as {name!r}",
            errors=[{"loc": "name", "field": "name", "msg": "must match the URL", "type": "name"}],
        )
    try:
        definition = Definition.model_validate({**document, "name": name})
    except ValidationError as exc:
        raise _schema_problems(exc, document) from None
    check(definition)
    return definition


def _schema_problems(exc: ValidationError, document: dict[str, Any]) -> Invalid:
    problems = Problems()
    steps = document.get("steps")
    raw_steps: list[Any] = steps if isinstance(steps, list) else []
    for e in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = list(e["loc"])
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            raw = raw_steps[loc[1]] if loc[1] < len(raw_steps) else {}
            step_id = raw.get("id") if isinstance(raw, dict) else None
            step = str(step_id) if step_id else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:] if not _union_tag(p)) or "(step)"
            problems.add(step, field, e["msg"], e["type"])
        else:
            field = ".".join(str(p) for p in loc if not _union_tag(p)) or "(definition)"
            problems.add(None, field, e["msg"], e["type"])
    try:
        problems.raise_if_any()
    except Invalid as invalid:
        return invalid
    return Invalid("invalid workflow definition")  # pragma: no cover


def _union_tag(part: Any) -> bool:
    """Pydantic names union branches in a loc (``float``, ``str``): not a field."""
    return part in (
        "float",
        "str",
        "int",
        "list[any]",
        "function-after[_timeout(), union[float,str]]",
    )


def check(definition: Definition) -> None:
    """The checks a schema cannot express: DAG shape, expressions and what they refer to."""
    problems = Problems()
    ids = [s.id for s in definition.steps]
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            problems.add(sid, "id", f"step id {sid!r} is used twice", "duplicate")
        seen.add(sid)
    known = set(ids)
    _KNOWN.set(frozenset(known))
    for step in definition.steps:
        for i, dep in enumerate(step.depends_on):
            if dep not in known:
                problems.add(step.id, f"depends_on[{i}]", f"unknown step {dep!r}", "unknown_step")
            elif dep == step.id:
                problems.add(step.id, f"depends_on[{i}]", "a step cannot depend on itself", "cycle")
    problems.raise_if_any()
    cycle = find_cycle(definition.steps)
    if cycle:
        problems.add(cycle[0], "depends_on", f"dependency cycle: {' -> '.join(cycle)}", "cycle")
        problems.raise_if_any()
    upstream = ancestors(definition.steps)
    for step in definition.steps:
        _check_step(step, upstream, problems)
    for i, trigger in enumerate(definition.triggers):
        base = f"triggers[{i}]"
        roots = {"event", "trigger"}
        if trigger.when is not None:
            when = trigger.when
            _check_expr(
                None, f"{base}.when", lambda w=when: [expr.condition(w)], roots, None, problems
            )
        _check_expr(
            None, f"{base}.params", lambda p=trigger.params: _templates(p), roots, None, problems
        )
    _check_expr(None, "params", lambda: _templates(definition.params), set(), None, problems)
    _check_expr(
        None,
        "output",
        lambda: _templates(definition.output),
        STEP_NAMES,
        (None, set(ids)),
        problems,
    )
    problems.raise_if_any()


def _templates(value: Any) -> list[expr.Expression]:
    return [e for _path, e in expr.template_expressions(value)]


def _check_step(step: Step, upstream: dict[str, set[str]], problems: Problems) -> None:
    roots = set(STEP_NAMES)
    if step.for_each is not None:
        roots |= {"item", "index"}
    refs = (step.id, upstream[step.id])
    if step.when is not None:
        _check_expr(
            step.id, "when", lambda: [expr.condition(step.when or "")], STEP_NAMES, refs, problems
        )
    if step.for_each is not None:
        if isinstance(step.for_each, str):
            _check_expr(
                step.id,
                "for_each",
                lambda: [expr.condition(str(step.for_each))],
                STEP_NAMES,
                refs,
                problems,
            )
        else:
            _check_expr(
                step.id, "for_each", lambda: _templates(step.for_each), STEP_NAMES, refs, problems
            )
    _check_action(step.id, "", step, roots, refs, problems)
    if step.on_failure is not None:
        # a compensation sees its own step's result (which may have failed) and the failure
        comp_refs = (step.id, upstream[step.id] | {step.id})
        _check_action(
            step.id, "on_failure.", step.on_failure, roots | {"failure"}, comp_refs, problems
        )


def _check_action(
    step_id: str,
    prefix: str,
    action: Action,
    roots: AbstractSet[str],
    refs: tuple[str | None, set[str]],
    problems: Problems,
) -> None:
    if action.call is not None:
        _check_expr(
            step_id, f"{prefix}with", lambda: _templates(action.with_), roots, refs, problems
        )
    if action.publish is not None:
        _check_expr(
            step_id, f"{prefix}payload", lambda: _templates(action.payload), roots, refs, problems
        )
    if action.workflow is not None:
        _check_expr(
            step_id,
            f"{prefix}workflow.params",
            lambda: _templates(action.workflow.params if action.workflow else {}),
            roots,
            refs,
            problems,
        )
    if action.wait_event is not None and action.wait_event.match is not None:
        match = action.wait_event.match
        _check_expr(
            step_id,
            f"{prefix}wait_event.match",
            lambda: [expr.condition(match)],
            roots | {"event"},
            refs,
            problems,
        )


def _check_expr(
    step_id: str | None,
    field: str,
    produce: Any,
    roots: AbstractSet[str],
    refs: tuple[str | None, set[str]] | None,
    problems: Problems,
) -> None:
    try:
        expressions: Iterable[expr.Expression] = produce()
        expressions = list(expressions)
    except expr.ExpressionError as exc:
        problems.add(step_id, field, f"bad expression: {exc}", "expression")
        return
    for e in expressions:
        unknown = e.names() - roots
        if unknown:
            allowed = ", ".join(sorted(roots)) or "nothing (literal values only)"
            problems.add(
                step_id,
                field,
                f"{e.source.strip()!r} reads unknown name(s) {sorted(unknown)}; "
                f"here it may read {allowed}",
                "unknown_name",
            )
            continue
        if refs is None:
            continue
        owner, visible = refs
        for ref, attr in sorted(set(e.step_refs()), key=str):
            if ref not in visible:
                if ref not in _KNOWN.get():
                    msg = f"{e.source.strip()!r} reads steps.{ref}: there is no step {ref!r}"
                elif owner is not None and ref == owner:
                    msg = f"step {owner!r} cannot read its own output"
                elif owner is not None:
                    msg = (
                        f"{e.source.strip()!r} reads steps.{ref} but {ref!r} is not a step "
                        f"this one depends on (directly or indirectly)"
                    )
                else:
                    msg = f"{e.source.strip()!r} reads steps.{ref}, an unknown step"
                problems.add(step_id, field, msg, "unknown_step_output")
            elif attr is not None and attr not in STEP_FIELDS:
                problems.add(
                    step_id,
                    field,
                    f"steps.{ref}.{attr}: a step has {sorted(STEP_FIELDS)}",
                    "unknown_step_output",
                )


def find_cycle(steps: list[Step]) -> list[str] | None:
    """A dependency cycle as ``[a, b, c, a]`` (``a`` depends on ``b`` ...), or None."""
    deps = {s.id: list(s.depends_on) for s in steps}
    color: dict[str, int] = dict.fromkeys(deps, 0)  # 0 new, 1 on stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in deps.get(node, []):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt) == 0:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return None

    for sid in deps:
        if color[sid] == 0:
            found = visit(sid)
            if found:
                return found
    return None


def ancestors(steps: list[Step]) -> dict[str, set[str]]:
    """Every step's transitive dependencies (the DAG is acyclic here)."""
    deps = {s.id: s.depends_on for s in steps}
    memo: dict[str, set[str]] = {}

    def of(sid: str) -> set[str]:
        if sid not in memo:
            out: set[str] = set()
            for d in deps[sid]:
                out |= {d} | of(d)
            memo[sid] = out
        return memo[sid]

    return {sid: of(sid) for sid in deps}


def digest(document: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
