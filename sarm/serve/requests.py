"""Request bodies of ``sarm serve``, checked and turned into items to score, or refused with a 4xx naming the field.

Both endpoints become one payload the inference worker scores, ``{"protocol", "items", ...}`` with each item
``{"prompt": [messages], "response": text}`` read exactly as ``sarm score`` reads a ``prompt`` + ``response`` row
(``sarm.data.responses.response_row``): a plain-text prompt is one user turn, a conversation is its turns, an
``"\\n\\nHuman: … \\n\\nAssistant:"`` transcript is its turns.

``POST /get_reward`` (OpenRLHF's remote reward model): ``{"query": [full texts], "prompts": [prompts]}`` (other
keys, such as OpenRLHF's ``labels``, are ignored). A query is its prompt followed by the response, so each
``prompts[i]`` must be a prefix of ``query[i]`` and the response is what follows it, less the whitespace that
separates it from the prompt (and, in the worker, less trailing pad/eos strings: ``sarm.serve.scoring``); the prompt
is then read as above. sarm renders prompt and response with the reward model's own chat template, so prompts are
sent as plain text (or a transcript or conversation), not already rendered with a template.

``POST /score`` (sarm's own): ``{"items": [{"prompt": text | [messages] | null, "response": text}],
"top_features": k, "normalize": bool}``; unknown keys are refused (a misspelt option would otherwise be ignored).

Statuses: 400 the body is not JSON or not a JSON object; 413 more texts than ``max_texts`` (or, in the middleware,
a body over ``max_body_bytes``); 422 a field missing, of the wrong type, empty, over ``max_chars`` characters, lists
of different lengths, a prompt that does not begin its query. An empty response after a prompt is scored, as
``sarm score`` scores it (a policy that produced nothing still gets a reward); a text with nothing at all, no
prompt and no response, is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sarm.data.responses import response_row
from sarm.data.rows import RowError, kind_of

OPENRLHF, SARM = "openrlhf", "sarm"
SARM_KEYS = ("items", "top_features", "normalize")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_texts: int = 64  # texts (queries or items) in one request
    max_chars: int = 32_000  # characters in one text: a query, a prompt's messages together, a response
    max_top_features: int = 100


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and a message that names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body (400 if it is not JSON)."""
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "body: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise BadRequest(400, f"body: malformed JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def read_openrlhf(body: Any, limits: Limits) -> dict:
    """The payload of a ``/get_reward`` body: one item per (query, prompt)."""
    body = _object(body)
    query, prompts = _texts(body, "query", limits), _texts(body, "prompts", limits)
    if len(prompts) != len(query):
        raise BadRequest(422, f"prompts: {len(prompts)} prompts for {len(query)} queries (one prompt per query)")
    items = []
    for i, (text, prompt) in enumerate(zip(query, prompts)):
        if not text:
            raise BadRequest(422, f"query[{i}]: empty")
        if not text.startswith(prompt):
            raise BadRequest(422, f"prompts[{i}]: not a prefix of query[{i}] (a query is its prompt + the response)")
        response = text[len(prompt) :].lstrip()  # the space or newline after the prompt separates, it is not said
        items.append(_item({"prompt": prompt, "response": response}, f"prompts[{i}]", f"query[{i}]"))
    return {"protocol": OPENRLHF, "items": items}


def read_sarm(body: Any, limits: Limits) -> dict:
    """The payload of a ``/score`` body."""
    body = _object(body)
    unknown = sorted(set(body) - set(SARM_KEYS))
    if unknown:
        raise BadRequest(422, f"{unknown[0]}: unknown field (expected {', '.join(SARM_KEYS)})")
    items = _list(body, "items", limits)
    top = body.get("top_features", 0)
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= limits.max_top_features:
        raise BadRequest(422, f"top_features: expected an integer from 0 to {limits.max_top_features}, got {top!r}")
    normalize = body.get("normalize", False)
    if not isinstance(normalize, bool):
        raise BadRequest(422, f"normalize: expected true or false, got {kind_of(normalize)}")
    read = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(422, f"items[{i}]: expected an object with 'prompt' and 'response', got {kind_of(item)}")
        unknown = sorted(set(item) - {"prompt", "response"})
        if unknown:
            raise BadRequest(422, f"items[{i}].{unknown[0]}: unknown field (expected prompt, response)")
        for name in ("prompt", "response"):
            if isinstance(item.get(name), str) and len(item[name]) > limits.max_chars:
                raise BadRequest(422, f"items[{i}].{name}: {_too_long(item[name], limits)}")
        read.append(_item(item, f"items[{i}].prompt", f"items[{i}].response"))
        if sum(len(m["content"]) for m in read[-1]["prompt"]) > limits.max_chars:
            raise BadRequest(422, f"items[{i}].prompt: its messages hold more than {limits.max_chars} characters")
    return {"protocol": SARM, "items": read, "top_features": top, "normalize": normalize}


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadRequest(400, f"body: expected a JSON object, got {kind_of(body)}")
    return body


def _list(body: dict, name: str, limits: Limits) -> list:
    if name not in body:
        raise BadRequest(422, f"{name}: missing")
    value = body[name]
    if not isinstance(value, list):
        raise BadRequest(422, f"{name}: expected a list, got {kind_of(value)}")
    if not value:
        raise BadRequest(422, f"{name}: empty list")
    if len(value) > limits.max_texts:
        raise BadRequest(413, f"{name}: {len(value)} texts, more than this server's max_texts ({limits.max_texts})")
    return value


def _texts(body: dict, name: str, limits: Limits) -> list[str]:
    values = _list(body, name, limits)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise BadRequest(422, f"{name}[{i}]: expected text, got {kind_of(value)}")
        if len(value) > limits.max_chars:
            raise BadRequest(422, f"{name}[{i}]: {_too_long(value, limits)}")
    return values


def _too_long(text: str, limits: Limits) -> str:
    return f"{len(text)} characters, more than this server's max_chars ({limits.max_chars})"


def _item(row: dict, prompt_field: str, response_field: str) -> dict:
    """``{"prompt": [messages], "response": text}`` as ``sarm score`` reads the row; a bad field is a 422."""
    try:
        read = response_row(row, "")
    except RowError as err:
        field = {"prompt": prompt_field, "response": response_field}.get(err.field, response_field.split(".")[0])
        raise BadRequest(422, f"{field}: {err.reason}") from None
    if not read.prompt and not read.response:
        raise BadRequest(422, f"{response_field}: empty (no prompt and no response)")
    return {"prompt": read.prompt, "response": read.response}
