"""The provider file: the documented example parses, mistakes are refused at start."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from ccc.ai import config as config_module
from ccc.ai.config import AIConfig, load_config
from ccc.ai.service import build_service
from ccc.common.bus import Bus
from ccc.common.testing import running

from .conftest import settings, unique


def test_the_documented_example_parses(tmp_path: Path) -> None:
    doc = config_module.__doc__ or ""
    example = doc.split("The file is YAML (JSON is YAML too)::", 1)[1].split("With no file", 1)[0]
    path = tmp_path / "ai.yaml"
    path.write_text("\n".join(line[4:] for line in example.splitlines()))
    loaded = load_config(path)
    assert [p.name for p in loaded.providers] == ["openai", "lab", "claude"]
    assert loaded.models[0].deployments[0].weight == 3
    assert loaded.budgets["<api key id>"].max_usd == 5.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"providers": [{"name": "x", "kind": "openai"}]}, "needs base_url"),
        ({"providers": [{"name": "bad name", "kind": "litellm"}]}, "letters, digits"),
        (
            {"models": [{"name": "g", "deployments": [{"provider": "nope", "model": "m"}]}]},
            "unknown provider",
        ),
        (
            {"providers": [{"name": "a", "kind": "litellm"}, {"name": "a", "kind": "litellm"}]},
            "unique",
        ),
    ],
)
def test_mistakes_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        AIConfig.model_validate(raw)


async def test_the_service_reads_the_file_named_by_its_settings(
    nats_url: str, tmp_path: Path, fake
) -> None:
    name = unique("filed")
    _, url = await fake(name, ["m"])
    path = tmp_path / "ai.yaml"
    path.write_text(
        f"providers:\n  - {{name: {name}, kind: openai, base_url: '{url}/v1', discover: false,"
        " models: [m]}\nmodels:\n  - name: house-model\n    deployments:\n"
        f"      - {{provider: {name}, model: m}}\n"
    )
    service = build_service(settings=settings(config=path))
    async with running(service, nats_url):
        listed = {m["id"]: m for m in (await Bus(service.nc).call("ai.models"))["data"]}
    assert listed["house-model"]["kind"] == "alias"
    assert listed["house-model"]["providers"] == [name]


async def test_providers_named_by_the_environment(nats_url: str, fake) -> None:
    ollama, ollama_url = await fake("env-ollama", ["llama3.2:1b"])
    compatible, compatible_url = await fake("env-openai", ["gpt-env"], api_key="sk-env")
    service = build_service(
        settings=settings(
            ollama_url=ollama_url,
            openai_base_url=f"{compatible_url}/v1",
            openai_api_key="sk-env",
        )
    )
    async with running(service, nats_url):
        bus = Bus(service.nc)
        listed = {m["id"]: m for m in (await bus.call("ai.models"))["data"]}
        assert listed["llama3.2:1b"]["providers"] == ["ollama"]
        assert listed["gpt-env"]["providers"] == ["openai"]
        answer = await bus.call(
            "ai.chat", {"model": "gpt-env", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert answer["system_fingerprint"] == "fp_env-openai"
    assert ollama.hits["/api/tags"] >= 1 and compatible.calls == 1
