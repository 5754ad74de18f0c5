"""The audio endpoints with the official openai client through the real gateway:
transcriptions (multipart at the edge) and speech (binary answers), failover, and the
problem when no provider offers the capability."""

from __future__ import annotations

import io
import wave

import httpx
import openai
import pytest

from ccc.common.testing import refresh_catalog, wait_until

from .conftest import ai_instance, fakes_module, unique
from .test_openai_client import client
from .test_routing import provider

AUDIO = b"RIFF" + bytes(range(256)) * 8  # what the fake "hears": only its size matters


async def test_transcription_and_speech_through_the_gateway(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    name = unique("voice")
    upstream, url = await fake(name, ["whisper-fake", "tts-fake"], audio=True)
    config = {
        "providers": [
            provider(
                name,
                url,
                ["whisper-fake", "tts-fake"],
                capabilities=["audio_transcription", "speech"],
            )
        ]
    }
    async with ai_instance(nats_url, config):
        await refresh_catalog()
        ai = client(gateway)

        heard = await ai.audio.transcriptions.create(
            model="whisper-fake", file=("clip.wav", AUDIO, "audio/wav"), language="en"
        )
        assert heard.text == f"{name} heard {len(AUDIO)} bytes of clip.wav."
        sent = upstream.bodies[-1]
        assert sent["model"] == "whisper-fake" and sent["language"] == "en"
        assert sent["file"] == "clip.wav"

        verbose = await ai.audio.transcriptions.create(
            model="whisper-fake", file=("clip.wav", AUDIO), response_format="verbose_json"
        )
        assert verbose.text == heard.text and verbose.segments  # type: ignore[attr-defined]

        text = await ai.audio.transcriptions.create(
            model="whisper-fake", file=("clip.wav", AUDIO), response_format="text"
        )
        assert text == heard.text + "\n"
        srt = await ai.audio.transcriptions.with_raw_response.create(
            model="whisper-fake", file=("clip.wav", AUDIO), response_format="srt"
        )
        assert srt.headers["content-type"].startswith("text/plain")
        assert srt.http_response.text.startswith("1\n00:00:00,000 --> ")

        speech = await ai.audio.speech.create(model="tts-fake", voice="alloy", input="hello")
        audio = speech.read()
        assert speech.response.headers["content-type"] == "audio/mpeg"
        assert audio == fakes_module.fake_audio("mp3", f"{name}:alloy:hello")
        assert audio.startswith(b"ID3")

        wav = await ai.audio.speech.create(
            model="tts-fake", voice="nova", input="a longer sentence", response_format="wav"
        )
        assert wav.response.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(wav.read())) as parsed:
            assert parsed.getframerate() == 24000 and parsed.getnframes() > 0

        # Our validation answers 422; the provider's own refusal (no voice) reaches the
        # caller as a 400 with the provider's message.
        with pytest.raises(openai.UnprocessableEntityError):
            await ai.audio.speech.create(model="tts-fake", voice="alloy", input="")
        with pytest.raises(openai.BadRequestError) as refused:
            await ai.audio.speech.create(model="tts-fake", voice="", input="hello")
        assert "Missing required parameter: 'voice'" in refused.value.message
        with pytest.raises(openai.UnprocessableEntityError) as unstreamed:
            await ai.audio.speech.create(
                model="tts-fake", voice="alloy", input="hello", stream_format="sse"
            )
        assert "stream_format sse is not supported" in unstreamed.value.message


async def test_audio_calls_are_accounted_to_the_key(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    name = unique("metered")
    _, url = await fake(name, ["whisper-fake", "tts-fake"], audio=True)
    caps = {"capabilities": ["audio_transcription", "speech"]}
    admin = {"Authorization": f"Bearer {gateway['admin_key']}"}
    config = {"providers": [provider(name, url, ["whisper-fake", "tts-fake"], **caps)]}
    async with ai_instance(nats_url, config), httpx.AsyncClient(base_url=gateway["url"]) as http:
        await refresh_catalog()
        created = await http.post(
            "/v1/keys", json={"name": unique("listener"), "roles": ["reader"]}, headers=admin
        )
        key = created.json()
        ai = client(gateway, key["key"])
        await ai.audio.transcriptions.create(model="whisper-fake", file=("a.wav", AUDIO))
        await ai.audio.speech.create(model="tts-fake", voice="alloy", input="hello")
        own = {"Authorization": f"Bearer {key['key']}"}

        async def counted() -> bool:
            usage = await http.get(f"/v1/ai/usage/{key['id']}", headers=own)
            return bool(usage.json()["requests"] == 2)

        await wait_until(counted, timeout=5)


async def test_audio_fails_over_to_the_next_provider(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    broken, healthy = unique("broken"), unique("healthy")
    broken_app, broken_url = await fake(broken, ["whisper-x", "tts-x"], audio=True, mode="error500")
    healthy_app, healthy_url = await fake(healthy, ["whisper-x", "tts-x"], audio=True)
    caps = {"capabilities": ["audio_transcription", "speech"]}
    config = {
        "providers": [
            provider(broken, broken_url, ["whisper-x", "tts-x"], **caps),
            provider(healthy, healthy_url, ["whisper-x", "tts-x"], **caps),
        ],
        "models": [
            {
                "name": "stt",
                "routing": "ordered",
                "deployments": [
                    {"provider": broken, "model": "whisper-x"},
                    {"provider": healthy, "model": "whisper-x"},
                ],
            },
            {
                "name": "tts",
                "routing": "ordered",
                "deployments": [
                    {"provider": broken, "model": "tts-x"},
                    {"provider": healthy, "model": "tts-x"},
                ],
            },
        ],
    }
    async with ai_instance(nats_url, config):
        await refresh_catalog()
        ai = client(gateway)
        heard = await ai.audio.transcriptions.create(model="stt", file=("a.mp3", AUDIO))
        assert heard.text.startswith(f"{healthy} heard")
        assert broken_app.calls == 1 and healthy_app.calls == 1

        # The broken provider is cooling down (shared cooldown): speech goes straight on.
        speech = await ai.audio.speech.create(model="tts", voice="alloy", input="hi")
        assert speech.read() == fakes_module.fake_audio("mp3", f"{healthy}:alloy:hi")
        assert broken_app.calls == 1 and healthy_app.calls == 2


async def test_audio_without_a_capable_provider_is_a_clear_problem(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    plain = unique("plain")
    _, url = await fake(plain, ["gpt-fake"], audio=True)
    async with ai_instance(nats_url, {"providers": [provider(plain, url, ["gpt-fake"])]}):
        await refresh_catalog()
        ai = client(gateway)
        with pytest.raises(openai.BadRequestError) as refused:
            await ai.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO))
        body = refused.value.response.json()
        assert refused.value.response.headers["content-type"] == "application/problem+json"
        assert body["capability"] == "audio_transcription" and body["providers"] == [plain]
        assert "no configured provider offers audio_transcription" in refused.value.message

        with pytest.raises(openai.BadRequestError) as mute:
            await ai.audio.speech.create(model="tts-1", voice="alloy", input="hello")
        body = mute.value.response.json()
        assert body["capability"] == "speech" and body["providers"] == [plain]
