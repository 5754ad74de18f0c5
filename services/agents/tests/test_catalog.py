"""Tool names: OpenAI's ``^[a-zA-Z0-9_-]{1,64}$``, unambiguous, mapped back by table."""

from __future__ import annotations

import json

from ccc.agents.catalog import NAME_OK, _parameters, matches, tool_name


def test_targets_become_valid_function_names() -> None:
    assert tool_name("rag.search") == "rag__search"
    assert tool_name("talos_k8s.cluster.create") == "talos_k8s__cluster__create"
    long = "database." + ".".join(["backup_schedule"] * 6)
    name = tool_name(long)
    assert len(name) == 64 and NAME_OK.match(name)
    assert name != tool_name(long + "x")  # the hash keeps cut names apart


def test_globs_and_schemas() -> None:
    assert matches("terraform.plan.apply", ["*.apply"])
    assert matches("database.backup.create", ["database.backup.*"])
    assert not matches("rag.search", ["database.*", "ai.*"])
    schema = {"title": "EchoRequest", "type": "object", "properties": {"t": {"type": "string"}}}
    assert _parameters(json.dumps(schema)) == {
        "type": "object",
        "properties": {"t": {"type": "string"}},
    }
    assert _parameters("not json") == {"type": "object", "properties": {}}
