"""Bad input is refused before anything is stored or run, with the step and field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccc.common import Invalid, NotFound, Service
from ccc.workflow.definition import json_schema

from .conftest import Target, put, start, unique

SCHEMA_FILE = Path(__file__).parents[1] / "schema" / "workflow-definition.schema.json"


async def refused(wf: Service, definition: dict[str, object] | str) -> Invalid:
    body: dict[str, object] = {"name": unique("bad")}
    body["source" if isinstance(definition, str) else "definition"] = definition
    with pytest.raises(Invalid) as caught:
        await wf.bus.call("workflow.definition.put", body)
    return caught.value


async def test_invalid_field_is_named_with_its_step(wf: Service) -> None:
    err = await refused(
        wf,
        {
            "steps": [
                {"id": "fetch", "call": "inventory.get"},
                {
                    "id": "charge",
                    "call": "billing.charge",
                    "depends_on": ["fetch"],
                    "retry": {"max_attempts": 0},
                },
            ]
        },
    )
    assert err.status == 422
    assert err.errors and err.errors[0]["step"] == "charge"
    assert err.errors[0]["field"] == "retry.max_attempts"
    assert err.errors[0]["loc"] == "steps.charge.retry.max_attempts"
    assert "step 'charge' field 'retry.max_attempts'" in err.detail


async def test_a_step_with_two_kinds_or_a_typo_is_refused(wf: Service) -> None:
    err = await refused(wf, {"steps": [{"id": "a", "call": "x.y", "delay": 3}]})
    assert err.errors and err.errors[0]["loc"] == "steps.a"
    assert "exactly one of" in err.errors[0]["msg"]
    err = await refused(wf, {"steps": [{"id": "a", "call": "x.y", "dependson": ["b"]}]})
    assert err.errors and err.errors[0]["field"] == "dependson"


async def test_a_cycle_is_refused_with_the_cycle_named(wf: Service) -> None:
    err = await refused(
        wf,
        {
            "steps": [
                {"id": "a", "call": "x.y", "depends_on": ["c"]},
                {"id": "b", "call": "x.y", "depends_on": ["a"]},
                {"id": "c", "call": "x.y", "depends_on": ["b"]},
                {"id": "d", "call": "x.y"},
            ]
        },
    )
    assert "dependency cycle: a -> c -> b -> a" in err.detail
    assert err.errors and err.errors[0]["type"] == "cycle"


async def test_unknown_step_output_reference_is_refused(wf: Service) -> None:
    err = await refused(
        wf,
        {
            "steps": [
                {"id": "a", "call": "x.y"},
                {
                    "id": "b",
                    "call": "x.y",
                    "depends_on": ["a"],
                    "with": {"v": "${{ steps.zz.output }}"},
                },
            ]
        },
    )
    assert err.errors and err.errors[0]["step"] == "b" and err.errors[0]["field"] == "with"
    assert "there is no step 'zz'" in err.errors[0]["msg"]
    err = await refused(
        wf,
        {
            "steps": [
                {"id": "a", "call": "x.y"},
                {"id": "b", "call": "x.y", "when": "steps.a.output.ok"},
            ]
        },
    )
    assert "not a step this one depends on" in err.detail
    err = await refused(
        wf,
        {
            "steps": [
                {"id": "a", "call": "x.y"},
                {"id": "b", "call": "x.y", "depends_on": ["a"], "when": "steps.a.outptu.ok"},
            ]
        },
    )
    assert err.errors and err.errors[0]["type"] == "unknown_step_output"


async def test_unsafe_or_broken_expressions_are_refused(wf: Service) -> None:
    err = await refused(wf, {"steps": [{"id": "a", "call": "x.y", "when": "__import__('os')"}]})
    assert "unknown function '__import__'" in err.detail
    err = await refused(wf, {"steps": [{"id": "a", "call": "x.y", "with": {"v": "${{ a. }}"}}]})
    assert err.errors and err.errors[0]["field"] == "with"
    err = await refused(wf, {"steps": [{"id": "a", "call": "x.y", "with": {"i": "${{ item }}"}}]})
    assert "unknown name(s) ['item']" in err.detail


async def test_bad_yaml_and_bad_triggers(wf: Service) -> None:
    err = await refused(wf, "steps:\n  - id: a\n   call: x.y\n")
    assert "at line 3, column 4" in err.detail
    err = await refused(
        wf,
        {
            "triggers": [{"cron": "* * * * *", "timezone": "Mars/Olympus"}],
            "steps": [{"id": "a", "call": "x.y"}],
        },
    )
    assert "unknown time zone 'Mars/Olympus'" in err.detail


async def test_yaml_source_is_accepted_and_nothing_is_stored_on_error(wf: Service) -> None:
    name = unique("yaml")
    source = (
        "description: from YAML\n"
        "steps:\n"
        "  - id: a\n"
        "    call: wftarget.echo\n"
        "    with: {x: 1}\n"
        "  - id: b\n"
        "    delay: 10ms\n"
        "    depends_on: [a]\n"
    )
    view = await wf.bus.call("workflow.definition.put", {"name": name, "source": source})
    assert view["version"] == 1 and view["definition"]["steps"][1]["delay"] == 0.01
    with pytest.raises(Invalid):
        await wf.bus.call(
            "workflow.definition.put",
            {"name": name, "source": source + "    retry: {max_attempts: -1}\n"},
        )
    latest = await wf.bus.call("workflow.definition.get", {"name": name})
    assert latest["version"] == 1


async def test_starting_an_unknown_workflow_is_404(wf: Service) -> None:
    with pytest.raises(NotFound):
        await start(wf.bus, "no-such-workflow")


async def test_validate_returns_the_waves(wf: Service) -> None:
    result = await wf.bus.call(
        "workflow.definition.validate",
        {
            "name": "v",
            "definition": {
                "steps": [
                    {"id": "a", "call": "x.y"},
                    {"id": "b", "call": "x.y", "depends_on": ["a"]},
                    {"id": "c", "call": "x.y", "depends_on": ["a"]},
                    {"id": "d", "call": "x.y", "depends_on": ["b", "c"]},
                ]
            },
        },
    )
    assert result["order"] == [["a"], ["b", "c"], ["d"]]


async def test_delete_stops_new_runs(wf: Service, wftarget: Target) -> None:
    name = unique("gone")
    await put(wf.bus, name, {"steps": [{"id": "a", "call": "wftarget.echo"}]})
    await wf.bus.call("workflow.definition.delete", {"name": name})
    with pytest.raises(NotFound):
        await start(wf.bus, name)
    names = [w["name"] for w in (await wf.bus.call("workflow.definition.list"))["workflows"]]
    assert name not in names


def test_published_schema_matches_the_models() -> None:
    """``schema/workflow-definition.schema.json`` is generated from the pydantic models:
    regenerate with ``python -m ccc.workflow.definition > services/workflow/schema/...``."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
