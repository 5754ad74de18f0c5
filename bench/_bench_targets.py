"""Processes the gateway benchmark measures, one per invocation:

python bench/_bench_targets.py raw <nats-url>       raw nats-py responder (baseline)
python bench/_bench_targets.py service <nats-url>   the same echo on the CCC runtime
python bench/_bench_targets.py direct <port>        a direct FastAPI echo route (baseline)
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel


class Echo(BaseModel):
    text: str
    n: int = 0


def raw(url: str) -> None:
    import nats
    import uvloop

    async def main() -> None:
        nc = await nats.connect(url)

        async def respond(msg: nats.aio.msg.Msg) -> None:
            echo = Echo.model_validate_json(msg.data)  # the same work as the runtime's
            await nc.publish(msg.reply, echo.model_dump_json().encode())

        await nc.subscribe("bench.raw", queue="q", cb=respond)
        await asyncio.Event().wait()

    uvloop.run(main())


def service(url: str) -> None:
    from ccc.common import Context, Service, Settings

    svc = Service("benchecho", settings=Settings(nats_url=url, log_level="WARNING"))

    @svc.endpoint("echo", roles=("reader",))
    async def echo(req: Echo, ctx: Context) -> Echo:
        """Echo."""
        return req

    svc.run()


def direct(port: str) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/echo")
    async def echo(req: Echo) -> Echo:
        return req

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(port),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    {"raw": raw, "service": service, "direct": direct}[sys.argv[1]](sys.argv[2])
