"""`python -m bench.baseline_http PORT`: a bare FastAPI JSON POST endpoint under the gateway's uvicorn settings.

The accept-rate baseline: same framework, same server, same config, no product work.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/mma/still/create")
async def create(body: dict[str, Any]) -> JSONResponse:
    generation_id = uuid.uuid4().hex
    return JSONResponse({"generation_id": generation_id, "status": "queued",
                         "sse_url": f"/mma/stream/{generation_id}", "echo": len(body)})


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


def main() -> None:
    port = int(sys.argv[1])
    # the gateway's settings (services/gateway/app.py)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                  access_log=False, timeout_graceful_shutdown=10)).run()


if __name__ == "__main__":
    main()
