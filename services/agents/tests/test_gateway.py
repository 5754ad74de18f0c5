"""Through the edge with non-admin keys: the agent can never do what the key cannot."""

from __future__ import annotations

import io
from typing import Any

import httpx
from rich.console import Console

from ccc.agents.models import RunView
from ccc.agents.show import render, show_async
from ccc.common import Service
from ccc.common.testing import refresh_catalog, wait_until

from .conftest import Target, unique


async def test_an_operator_key_runs_an_agent_over_http(
    gateway: dict[str, str], agents: Service, model: Any, agtarget: Target, nats_url: str
) -> None:
    await refresh_catalog()
    admin = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with httpx.AsyncClient(base_url=gateway["url"], timeout=10) as http:
        keys = {}
        for role in ("operator", "reader"):
            r = await http.post(
                "/v1/keys", headers=admin, json={"name": f"agents-{role}", "roles": [role]}
            )
            assert r.status_code == 201, r.text
            keys[role] = ({"Authorization": f"Bearer {r.json()['key']}"}, r.json()["id"])
        operator, operator_id = keys["operator"]
        reader, _ = keys["reader"]

        m = model.script(
            [
                {
                    "tool_calls": [
                        {"name": "agtarget__secret", "arguments": {}},
                        {"name": "agtarget__echo", "arguments": {"text": "edge"}},
                    ]
                },
                {"content": "Only the echo worked."},
            ]
        )
        name = unique("edge")
        spec = {"model": m, "instructions": "Be brief.", "tools": ["agtarget.*"]}
        r = await http.put(f"/v1/agents/{name}", headers=operator, json=spec)
        assert r.status_code == 200, r.text
        assert r.json()["created_by"] == operator_id

        # what the agent may use depends on the key asking
        r = await http.get(f"/v1/agents/{name}/tools", headers=operator)
        assert r.status_code == 200, r.text
        mine = {t["name"] for t in r.json()["tools"]}
        assert "agtarget__echo" in mine and "agtarget__secret" not in mine
        r = await http.get(f"/v1/agents/{name}/tools", headers=admin)
        assert "agtarget__secret" in {t["name"] for t in r.json()["tools"]}
        drop = next(t for t in r.json()["tools"] if t["name"] == "agtarget__table__drop")
        assert drop["dangerous"] is True

        r = await http.post(f"/v1/agents/{name}/runs", headers=reader, json={"input": "hi"})
        assert r.status_code == 403, r.text
        r = await http.post(f"/v1/agents/{name}/runs", headers=operator, json={"input": "hi"})
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]

        async def ended() -> bool:
            got = await http.get(f"/v1/agent-runs/{run_id}", headers=operator)
            return got.status_code == 200 and got.json()["run"]["status"] == "completed"

        await wait_until(ended, timeout=15)
        view = (await http.get(f"/v1/agent-runs/{run_id}", headers=operator)).json()
        # what the operator's tools answered is not for a reader's eyes; an admin may look
        r = await http.get(f"/v1/agent-runs/{run_id}", headers=reader)
        assert r.status_code == 403, r.text
        assert (await http.get(f"/v1/agent-runs/{run_id}", headers=admin)).status_code == 200
        r = await http.get("/v1/agent-runs", headers=reader, params={"agent": name})
        assert r.json()["runs"] == []
        r = await http.get(f"/v1/operations/{run_id}", headers=operator)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        assert r.json()["result"]["end_reason"] == "final_answer"

        r = await http.post(f"/v1/agent-runs/{run_id}/approve", headers=operator, json={})
        assert r.status_code == 422  # an empty body approves nothing
        r = await http.post(
            f"/v1/agent-runs/{run_id}/approve", headers=operator, json={"approved": True}
        )
        assert r.status_code == 409
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await http.get("/v1/agent-runs/agents-nope", headers=reader)
        assert r.status_code == 422
        r = await http.get("/v1/agent-runs", headers=operator, params={"agent": name})
        assert [x["id"] for x in r.json()["runs"]] == [run_id]

    run = view["run"]
    assert run["caller"] == operator_id and run["caller_roles"] == ["operator"]
    secret, echo = [s["tool"] for s in view["steps"] if s["kind"] == "tool"]
    assert secret["status"] == "refused"
    assert echo["status"] == "ok" and echo["result"] == {"echo": "EDGE", "caller": operator_id}

    # ccc agents show <run>
    out = io.StringIO()
    render(RunView.model_validate(view), Console(file=out, width=160))
    text = out.getvalue()
    assert run_id in text and "completed" in text and "agtarget.echo [ok]" in text
    assert "refused" in text
    out = io.StringIO()
    status = await show_async(run_id, nats_url=nats_url, console=Console(file=out, width=160))
    assert status == "completed" and "Only the echo worked." in out.getvalue()
