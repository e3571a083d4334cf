"""Load test of ``sarm serve``: throughput against offline ``sarm score`` on the same texts, latency, errors, and
every served reward checked against the offline one.

    python scripts/load_test.py --model runs/hh/sarm --data runs/hh/rb2_safety.jsonl.gz --requests 48 --clients 4

Starts ``sarm serve`` on a free loopback port (or uses ``--url``'s), then ``clients`` threads send ``requests``
requests of ``texts_per_request`` responses each (the chosen and rejected sides of ``data``'s pairs, or its
responses) until all are answered or ``max_seconds`` have passed since the start; what was not sent by then is
counted, not sent. Offline scoring is what ``sarm score`` runs on a file of ``prompt`` + ``response`` rows, one
``RewardModel.score`` call over the same texts with the same ``batch_size``, in this process while the server is
idle. A served reward equals its offline one when
|served − offline| ≤ ``tolerance`` · max(1, |offline|): the texts are the same, only which of them share a forward
pass differs. The server this script started is stopped (its whole process group) before it returns.

Then (``bad_requests``) one of each kind of bad request, built from the limits the server reports on ``/info``:
a table of case, status and message, and whether the server still answered a good request after each.

Bounded in count and time, loopback only. Prints the tables; exits 1 if a good request failed, a reward differs, a
bad request was not refused with a 4xx, or the server stopped answering.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from jsonargparse import CLI


def load_test(
    model: str = "runs/demo/sarm/export",
    data: str = "builtin:planted",
    url: str | None = None,
    endpoint: Literal["score", "get_reward"] = "score",
    requests: int = 48,
    clients: int = 4,
    texts_per_request: int = 1,
    max_seconds: float = 900.0,
    repeats: int = 1,
    batch_size: int = 8,
    max_batch_size: int = 8,
    max_batch_delay: float = 0.01,
    tolerance: float = 1e-4,
    bad_requests: bool = True,
    output: str | None = None,
) -> dict:
    """Throughput, latency and correctness of ``sarm serve`` under ``clients`` concurrent clients.

    Args:
        model: the exported reward model (served, and scored offline).
        data: preference pairs or ``prompt`` + ``response`` rows; ``builtin:planted`` generates pairs.
        url: a running server's base URL (``http://127.0.0.1:8000``) instead of starting one.
        endpoint: ``score`` (sarm's) or ``get_reward`` (OpenRLHF's; needs single-turn text prompts).
        requests: requests sent in all.
        clients: concurrent clients (threads).
        texts_per_request: responses in each request.
        max_seconds: wall-clock cap on the whole run (start-up, offline scoring and load together).
        repeats: rounds of offline scoring then load, interleaved; throughputs are each side's best round (as
            ``bench_score.py`` reports), latencies and errors those of every round.
        batch_size: texts per forward pass, served and offline alike.
        max_batch_size: requests per dynamic batch of the server this script starts.
        max_batch_delay: seconds the server waits to fill a batch.
        tolerance: the largest |served − offline| / max(1, |offline|) counted as equal.
        bad_requests: after the load, send one bad request of each kind and print what the server answered.
        output: also write the summary here as JSON.
    """
    deadline = time.monotonic() + max_seconds
    rows = _rows(data, requests * texts_per_request)
    server = None
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = _start_server(model, port, batch_size, max_batch_size, max_batch_delay)
    try:
        _wait_healthy(url, server, deadline)
        score_offline = _offline(model, rows, batch_size)
        bodies = [_body(rows[i : i + texts_per_request], endpoint) for i in range(0, len(rows), texts_per_request)]
        _post(f"{url}/{endpoint}", bodies[0], deadline)  # warm-up, untimed (offline scoring gets one too)
        rounds = []
        for _ in range(repeats):  # interleaved, so that other jobs on the machine weigh on both sides alike
            offline, offline_seconds = score_offline()
            results, wall = _load(f"{url}/{endpoint}", bodies, clients, deadline)
            rounds.append({"results": results, "wall": wall, "offline": offline, "offline_seconds": offline_seconds})
        refused = _bad_requests(url, bodies[0], endpoint, deadline) if bad_requests else []
    finally:
        if server is not None:
            _stop(server)
    summary = _summary(rounds, texts_per_request, tolerance)
    summary |= {"model": model, "data": data, "endpoint": endpoint, "clients": clients, "requests": len(bodies)}
    summary["repeats"] = repeats
    summary["bad_requests"] = refused
    _print(summary)
    if output:
        Path(output).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rows(data: str, n: int) -> list[dict]:
    """``n`` prompt + response rows (cycling through the data if it holds fewer)."""
    from sarm.data.preference import load_preferences
    from sarm.data.responses import is_response_data, load_responses

    if data != "builtin:planted" and is_response_data(data):
        texts = [{"prompt": r.prompt, "response": r.response} for r in load_responses(data)]
    else:
        pairs = load_preferences(data, bad_rows="skip", num_pairs=max(n, 8))
        texts = [{"prompt": p.prompt, "response": side} for p in pairs for side in (p.chosen, p.rejected)]
    return [texts[i % len(texts)] for i in range(n)]


def _body(rows: list[dict], endpoint: str) -> dict:
    if endpoint == "score":
        return {"items": rows}
    prompts = []
    for row in rows:
        if len(row["prompt"]) != 1 or row["prompt"][0]["role"] != "user":
            raise SystemExit("load_test: --endpoint get_reward needs prompts of one user turn (plain text)")
        prompts.append(row["prompt"][0]["content"])
    return {"query": [p + r["response"] for p, r in zip(prompts, rows)], "prompts": prompts}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model, port, batch_size, max_batch_size, max_batch_delay) -> subprocess.Popen:
    sarm = Path(sys.executable).with_name("sarm")
    command = [str(sarm), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--batch_size", str(batch_size), "--max_batch_size", str(max_batch_size)]
    command += ["--max_batch_delay", str(max_batch_delay)]
    # its own process group, so that stopping it stops LitServe's workers too; stderr to a file, never a pipe that
    # nobody reads while the server runs (a full pipe would block the server)
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    server.stderr_file = log
    return server


def _wait_healthy(url: str, server: subprocess.Popen | None, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            server.stderr_file.seek(0)
            stderr = server.stderr_file.read().decode(errors="replace")
            raise SystemExit(f"load_test: the server exited ({server.returncode}):\n{stderr}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"load_test: {url} not healthy before the time cap")


def _stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _offline(model: str, rows: list[dict], batch_size: int):
    """A function that scores ``rows`` as ``sarm score`` scores a file of ``prompt`` + ``response`` rows (one
    ``RewardModel.score`` call, ``batch_size`` texts per forward pass) and returns their rewards and the seconds the
    scoring took; the model is loaded and warmed up once, before any clock starts, as the server's is."""
    from sarm.reward.inference import RewardModel

    loaded = RewardModel.load(model)
    loaded.score([rows[0]["prompt"]], [rows[0]["response"]])  # warm-up, untimed (the server gets one too)

    def score() -> tuple[list[float | None], float]:
        start = time.perf_counter()
        scores = loaded.score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size)
        seconds = time.perf_counter() - start
        return [float(r) if math.isfinite(float(r)) else None for r in scores.rewards], seconds

    return score


def _load(url: str, bodies: list[dict], clients: int, deadline: float) -> tuple[list[dict], float]:
    """Send every body (``clients`` at a time) until the deadline; one result per body, in order."""
    results: list[dict] = [{"status": None} for _ in bodies]
    lock, next_index = threading.Lock(), [0]

    def client():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(bodies) or time.monotonic() >= deadline:
                return
            results[i] = _post(url, bodies[i], deadline)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    return results, time.perf_counter() - start


def _post(url: str, body: dict | bytes, deadline: float) -> dict:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=max(1.0, deadline - time.monotonic())) as answer:
            status, reply = answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        status, reply = err.code, {"detail": err.read().decode(errors="replace")}
    except (urllib.error.URLError, OSError) as err:
        status, reply = "no answer", {"detail": str(err)}
    return {"status": status, "seconds": time.perf_counter() - start, "reply": reply}


def _summary(rounds: list[dict], texts_per_request: int, tolerance: float) -> dict:
    every = [r for round_ in rounds for r in round_["results"]]
    answered = [r for r in every if r["status"] == 200]
    differences, equal = [], True
    for round_ in rounds:
        for i, result in enumerate(round_["results"]):
            if result["status"] != 200:
                continue
            expected = round_["offline"][i * texts_per_request : (i + 1) * texts_per_request]
            served = result["reply"]["rewards"]
            equal &= len(served) == len(expected)
            for s, o in zip(served, expected):
                differences.append(_difference(s, o))
                equal &= differences[-1] <= tolerance * max(1.0, abs(o or 0.0))
    texts = sum(len(r["reply"]["rewards"]) for r in answered) / len(rounds)
    wall = min(round_["wall"] for round_ in rounds)
    offline_seconds = min(round_["offline_seconds"] for round_ in rounds)
    latencies = sorted(r["seconds"] for r in answered)
    errors = [f"{r['status']}: {r['reply']['detail']}" for r in every if r["status"] not in (200, None)]
    texts_per_second, offline_per_second = texts / wall, len(rounds[0]["offline"]) / offline_seconds
    return {
        "answered": len(answered),
        "errors": len(errors),
        "not_sent": sum(r["status"] is None for r in every),
        "error_examples": errors[:3],
        "texts": int(texts),
        "wall_s": wall,
        "requests_per_s": len(answered) / len(rounds) / wall,
        "texts_per_s": texts_per_second,
        "offline_texts_per_s": offline_per_second,
        "ratio": texts_per_second / offline_per_second,
        "p50_s": _quantile(latencies, 0.50),
        "p99_s": _quantile(latencies, 0.99),
        "max_abs_difference": max(differences, default=0.0),
        "all_equal": equal,
    }


def _bad_request_cases(limits: dict) -> list[tuple[str, str, bytes | dict]]:
    """(case, path, body): one bad request of each kind, over the server's own limits."""
    n, chars = limits["max_texts"], limits["max_chars"]
    item = {"prompt": "Hi", "response": "Hello"}
    return [
        ("malformed JSON", "get_reward", b'{"query": ["Hi"], "prompts": '),
        ("not an object", "get_reward", b'["Hi"]'),
        ("missing field", "get_reward", {"query": ["Hi there"]}),
        ("wrong type (a string for a list)", "get_reward", {"query": "Hi there", "prompts": ["Hi"]}),
        ("wrong type (a number for a text)", "get_reward", {"query": [3], "prompts": ["Hi"]}),
        ("mismatched lengths", "get_reward", {"query": ["Hi there", "Yo there"], "prompts": ["Hi"]}),
        ("prompt not a prefix of its query", "get_reward", {"query": ["Hi there", "Yo"], "prompts": ["Hi", "Hey"]}),
        ("empty text", "get_reward", {"query": [""], "prompts": [""]}),
        ("over-long text", "get_reward", {"query": ["x" * (chars + 1)], "prompts": ["x"]}),
        ("batch too large", "get_reward", {"query": ["Hi there"] * (n + 1), "prompts": ["Hi"] * (n + 1)}),
        ("body too large", "get_reward", b" " * (limits["max_body_bytes"] + 1)),
        ("missing response", "score", {"items": [{"prompt": "Hi"}]}),
        ("bad conversation", "score", {"items": [{"prompt": [{"role": "user"}], "response": "Hello"}]}),
        ("unknown option", "score", {"items": [item], "top_feature": 3}),
        ("top_features out of range", "score", {"items": [item], "top_features": -1}),
        ("normalize not a boolean", "score", {"items": [item], "normalize": "yes"}),
    ]


def _bad_requests(url: str, good: dict, endpoint: str, deadline: float) -> list[dict]:
    """Each bad request's status and message, and whether a good request was answered (200) right after it."""
    with urllib.request.urlopen(f"{url}/info", timeout=30) as answer:
        limits = json.loads(answer.read())["model"]["limits"]
    rows = []
    for case, path, body in _bad_request_cases(limits):
        refused = _post(f"{url}/{path}", body, deadline)
        message = refused["reply"].get("detail", "")
        try:
            message = json.loads(message)["detail"]  # an HTTP error's body, as _post keeps it
        except (ValueError, TypeError, KeyError):
            pass
        after = _post(f"{url}/{endpoint}", good, deadline)
        rows.append(
            {"case": case, "status": refused["status"], "message": message, "still_serving": after["status"] == 200}
        )
    return rows


def _difference(served, offline) -> float:
    if served is None or offline is None:  # null: not finite; equal only when both are
        return 0.0 if served is None and offline is None else math.inf
    return abs(served - offline)


def _quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile (NaN for no values)."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _print(s: dict) -> None:
    print(
        "| requests answered / errors / not sent (all rounds) | texts per round | best wall s | req/s | texts/s "
        "| offline texts/s | ratio "
        "| p50 s | p99 s | max abs(served - offline) | all equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {s['answered']} / {s['errors']} / {s['not_sent']} | {s['texts']} | {s['wall_s']:.1f} "
        f"| {s['requests_per_s']:.2f} | {s['texts_per_s']:.2f} | {s['offline_texts_per_s']:.2f} | {s['ratio']:.2f} "
        f"| {s['p50_s']:.2f} | {s['p99_s']:.2f} | {s['max_abs_difference']:.2e} | {s['all_equal']} |"
    )
    for example in s["error_examples"]:
        print(f"error: {example}")
    if s["bad_requests"]:
        print("\n| bad request | status | message | server answered a good request after it |")
        print("|---|---|---|---|")
        for case in s["bad_requests"]:
            message = case["message"].replace("|", "\\|")
            print(f"| {case['case']} | {case['status']} | {message} | {case['still_serving']} |")


if __name__ == "__main__":
    summary = CLI(load_test, as_positional=False)
    refused = all(400 <= case["status"] < 500 and case["still_serving"] for case in summary["bad_requests"])
    sys.exit(0 if not summary["errors"] and not summary["not_sent"] and summary["all_equal"] and refused else 1)
