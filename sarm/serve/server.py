"""``sarm serve``: the HTTP reward server (LitServe) over an exported reward model."""

from __future__ import annotations

import functools
import logging
import os
from typing import Literal

from sarm.serve.requests import Limits, read_openrlhf, read_sarm

OPENRLHF_PATH, SARM_PATH, HEALTH_PATH = "/get_reward", "/score", "/health"


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: Literal["cpu", "cuda", "auto"] = "cpu",
    workers: int = 1,
    batch_size: int = 8,
    max_batch_size: int = 8,
    max_batch_delay: float = 0.01,
    normalize: bool = False,
    max_texts: int = 64,
    max_chars: int = 32_000,
    max_body_bytes: int = 8 * 2**20,
    timeout: float = 600.0,
    log_level: str = "warning",
) -> None:
    """Serve rewards over HTTP: OpenRLHF's remote reward model protocol, sarm's own endpoint, a health check.

    ``POST /get_reward`` takes ``{"query": [prompt + response], "prompts": [prompt]}`` and answers
    ``{"rewards", "scores", "extra_logs"}``; ``POST /score`` takes ``{"items": [{"prompt", "response"}],
    "top_features": k, "normalize": bool}`` and answers each reward with its top feature contributions and normalized
    value; ``GET /health`` answers ``ok`` once the model is loaded. Requests are batched dynamically (LitServe).

    Args:
        model: directory of an exported reward model (``sarm.json``): SARM, residualized SARM or dense.
        host: address to listen on (``0.0.0.0`` to serve other machines).
        port: port to listen on.
        device: where the model runs (LitServe's accelerator).
        workers: inference processes per device, each with its own copy of the model.
        batch_size: texts per forward pass, as in ``sarm score``.
        max_batch_size: requests gathered into one dynamic batch.
        max_batch_delay: seconds a batch waits for more requests before it is scored.
        normalize: ``/get_reward`` answers rewards normalized with the validation mean/std stored in the model.
        max_texts: most texts one request may hold (more: 413).
        max_chars: most characters in one text (more: 422).
        max_body_bytes: largest request body (more: 413).
        timeout: seconds a request may wait for its batch before a 504.
        log_level: uvicorn's log level.
    """
    import litserve as ls

    from sarm.reward.export import load_network
    from sarm.serve.api import ROUTE, RewardAPI
    from sarm.serve.middleware import CheckedRoutes

    _, config = load_network(model)  # a bad export is a named error now, not a worker that never starts
    limits = Limits(max_texts=max_texts, max_chars=max_chars)
    routes = {
        OPENRLHF_PATH: functools.partial(read_openrlhf, limits=limits),
        SARM_PATH: functools.partial(read_sarm, limits=limits),
    }
    middleware = (CheckedRoutes, {"routes": routes, "target": ROUTE, "max_body_bytes": max_body_bytes})
    threads = max(1, (os.cpu_count() or 1) // workers)
    api = RewardAPI(model, batch_size, normalize, max_batch_size, max_batch_delay, threads)
    metadata = {
        "model": os.path.abspath(model),
        "kind": config["kind"],
        "pooling": config.get("pooling"),
        "backbone": config.get("backbone", {}).get("model"),
        "layer": config.get("backbone", {}).get("layer"),
        "normalize": normalize,
        "limits": {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": max_body_bytes},
    }
    server = ls.LitServer(
        api,
        accelerator=device,
        devices=1,
        workers_per_device=workers,
        timeout=timeout,
        healthcheck_path=HEALTH_PATH,
        model_metadata=metadata,
        middlewares=[middleware],
    )
    logging.getLogger("litserve").setLevel(log_level.upper())
    print(f"sarm: serving {model} on http://{host}:{port} ({OPENRLHF_PATH}, {SARM_PATH}, {HEALTH_PATH})", flush=True)
    server.run(host=host, port=port, log_level=log_level, generate_client_file=False)
