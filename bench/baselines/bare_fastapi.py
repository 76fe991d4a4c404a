"""Baseline: a bare FastAPI + uvicorn handler serving the seed ConvNet, written plainly.

``POST /invocations`` takes ``{"input_data": [{"values": N x 28 x 28 raw 0-255 numbers}]}``
and returns ``{"predictions": [{"fields": ["prediction", "probability"],
"values": [[label, [10 probabilities]], ...]}]}``.

    python bench/baselines/bare_fastapi.py --weights W [--port 0]   # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import MEAN, STD, load_convnet_class  # noqa: E402


def create_app(weights: str | Path) -> FastAPI:
    """Build the app around a ConvNet loaded from a state_dict file."""
    model = load_convnet_class()()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        values = np.asarray(payload["input_data"][0]["values"], dtype=np.float32)
        x = torch.from_numpy((values.reshape(-1, 1, 28, 28) / 255.0 - MEAN) / STD)
        with torch.inference_mode():
            probs = model(x).exp()
        labels = probs.argmax(1).tolist()
        rows = [[label, p] for label, p in zip(labels, probs.tolist())]
        return JSONResponse({"predictions": [{"fields": ["prediction", "probability"], "values": rows}]})

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(weights: str | Path, port: int = 0, host: str = "127.0.0.1") -> None:
    """Bind ``host:port`` (0 = a free port), print ``READY <port>`` and serve until stopped."""
    torch.set_num_threads(1)
    app = create_app(weights)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from here on, before uvicorn starts accepting
    fast = all(importlib.util.find_spec(m) for m in ("uvloop", "httptools"))
    config = uvicorn.Config(app, loop="uvloop" if fast else "asyncio", http="httptools" if fast else "h11",
                            workers=1, log_level="warning", access_log=False)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="ConvNet state_dict (torch.save)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    serve(args.weights, args.port, args.host)


if __name__ == "__main__":
    main()
