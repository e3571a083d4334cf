"""LLM explanations: a SAGE-style loop (arXiv 2511.20820) against an OpenAI-compatible endpoint.

The LLM never sees our model; it proposes, and our model's real activations decide:

    (a) hypotheses   the top exemplars (focus token marked <<like this>>, with its activation)
                     → ``n_hypotheses`` hypotheses about what the feature detects
    (b) tests        per hypothesis, ``n_tests`` texts that should activate the feature and
                     ``n_tests`` similar ones that should not
    (c) measure      ``activate(texts)``: the feature's REAL max activation over each text's tokens,
                     computed by the caller's backbone + SAE
    (d) verdict      the measured activations go back to the LLM, which confirms, refutes or
                     refines each hypothesis; refuted ones are dropped (if all are, the one whose
                     tests separated best is kept, refined), and (b)–(d) repeat for ``rounds``
    (e) conclude     from the exemplars and the tested hypotheses with their results, one short
                     sentence: the explanation

Separation of a test set, reported to the LLM and kept in the history:
``(mean activation of the should-activate texts − mean of the should-not texts) / top exemplar
activation``; ≈ 1 means the hypothesis makes texts that fire as strongly as the best exemplars and
texts that stay off.

Transport: ``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature"}``, the
answer read from ``choices[0].message.content``; standard library only (urllib). The API key, if
any, is read from the environment variable named by ``api_key_env`` and sent as a bearer token.
Every endpoint failure (HTTP error status, unreachable host, timeout, a body that is not JSON or
has no ``choices[0].message.content``) raises ``SarmInputError`` naming the URL and the problem.
Replies that do not hold the JSON a prompt asked for are read leniently (see ``_json_in``).

Judges. The same endpoint can score an explanation (any explainer's: only its text is shown) by the two
delphi scorers, each defined once in ``sarm.explain.detection`` / ``sarm.explain.fuzzing``; here are only the
yes/no questions: ``llm_predictor`` (detection: does the feature fire somewhere in this window?) and
``llm_judge`` (fuzzing: are the tokens marked <<like this>> the ones it fires on?). A reply is read by
``yes_or_no``: the first "yes" or "no" it states, in plain text, markdown or JSON ({"answer": "yes"}).
A reply that states neither, or both as its first words ("yes or no"), is *malformed*: it counts as "no"
(the feature does not fire / the highlighting is not the right one), the answer that can only lose points
on the positive class, and is tallied (``Verdicts.malformed``) so a score built on many such replies can be
told apart from a judge that really said no. An endpoint failure still raises (``SarmInputError``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from sarm.errors import SarmInputError
from sarm.explain.contexts import Context
from sarm.explain.fuzzing import HighlightedContext
from sarm.explain.store import Explanation

# Every prompt the loop sends, in one place. Placeholders are str.format fields ({{ }} = literal brace).
PROMPTS = {
    "system": (
        "You interpret features of a sparse autoencoder trained on the hidden states of a language model "
        "that serves as a reward model for chat responses. Be concrete and concise. When asked for JSON, "
        "reply with JSON only."
    ),
    "hypotheses": (
        "Here are the texts on which the feature fires most strongly. In each, the token with the "
        "strongest activation is marked <<like this>>; its activation follows the text.\n\n{exemplars}\n\n"
        "State {n} distinct hypotheses about what the feature detects. Reply with a JSON list of strings."
    ),
    "tests": (
        "Hypothesis about the feature: {hypothesis}\n\n"
        "Write {n} short texts that should make the feature fire if the hypothesis is true, and {n} similar "
        "texts that should not. Reply with JSON: "
        '{{"activating": ["..."], "non_activating": ["..."]}}'
    ),
    "verdict": (
        "Hypothesis about the feature: {hypothesis}\n\n"
        "We measured the feature's maximum activation on your test texts (the strongest exemplar reached "
        "{top:.3g}; 0 means it did not fire):\n{results}\n\n"
        "Do the measurements confirm the hypothesis, refute it, or call for refining it? Reply with JSON: "
        '{{"verdict": "confirmed" | "refuted" | "refined", "hypothesis": "<the hypothesis, refined if needed>"}}'
    ),
    "conclude": (
        "Top exemplars of the feature:\n\n{exemplars}\n\nHypotheses we tested, with the measured results:\n"
        "{history}\n\nWrite the final explanation of the feature: one sentence of at most 20 words saying "
        "what it fires on. Reply with the sentence only."
    ),
    "detect": (
        "A feature of a language model is explained as: {explanation}\n\n"
        "Text:\n{text}\n\nDoes the feature fire somewhere in this text? Answer yes or no."
    ),
    "fuzz": (
        "A feature of a language model is explained as: {explanation}\n\n"
        "In the text below, some tokens are marked <<like this>>.\n\nText:\n{text}\n\n"
        "Are the marked tokens the ones the feature fires on, as the explanation describes? Answer yes or no."
    ),
}


class ChatClient:
    """A minimal client of an OpenAI-compatible chat completions endpoint.

    Args:
        base_url: e.g. ``http://localhost:8000/v1``; requests go to ``{base_url}/chat/completions``.
        model: the model name sent in each request.
        api_key_env: environment variable holding the API key; unset or empty means no key is sent
            (local servers usually need none).
        temperature: sampling temperature of every request.
        timeout: seconds to wait for one answer.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        timeout: float = 120.0,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.temperature, self.timeout = model, api_key_env, temperature, timeout

    def chat(self, messages: list[dict]) -> str:
        """The assistant's reply to ``messages`` (``[{"role", "content"}, ...]``)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:  # before URLError: it is one
            try:
                detail = e.read()[:300].decode("utf-8", errors="replace").strip()
            except OSError:
                detail = ""
            raise SarmInputError(f"{self.url}: HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):  # socket.timeout is TimeoutError since 3.10
                raise SarmInputError(f"{self.url}: no answer within {self.timeout:g} s") from None
            raise SarmInputError(f"{self.url}: cannot reach the endpoint ({e.reason})") from None
        except TimeoutError:
            raise SarmInputError(f"{self.url}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:  # reset connections, malformed HTTP
            raise SarmInputError(f"{self.url}: request failed ({type(e).__name__}: {e})") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SarmInputError(f"{self.url}: the answer is not JSON: {raw[:200]!r}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SarmInputError(
                f"{self.url}: the answer has no choices[0].message.content: {json.dumps(data)[:200]}"
            ) from None
        if not isinstance(content, str):
            raise SarmInputError(f"{self.url}: choices[0].message.content is {type(content).__name__}, not text")
        return content

    def ask(self, prompt: str) -> str:
        return self.chat([{"role": "system", "content": PROMPTS["system"]}, {"role": "user", "content": prompt}])


def _json_in(reply: str):
    """The JSON a reply holds: the whole reply, else inside a ``` fence, else its outermost [...] / {...}."""
    candidates = [reply, *re.findall(r"```(?:json)?\s*(.*?)```", reply, flags=re.DOTALL)]
    for opener, closer in ("[]", "{}"):
        start, end = reply.find(opener), reply.rfind(closer)
        if 0 <= start < end:
            candidates.append(reply[start : end + 1])
    for text in candidates:
        try:
            return json.loads(text.strip())
        except json.JSONDecodeError:
            continue
    return None


def _strings(value) -> list[str]:
    return [str(v).strip() for v in value if str(v).strip()] if isinstance(value, list) else []


def _parse_hypotheses(reply: str) -> list[str]:
    found = _json_in(reply)
    if isinstance(found, dict):  # {"hypotheses": [...]}
        found = next((v for v in found.values() if isinstance(v, list)), None)
    hypotheses = _strings(found)
    if not hypotheses:  # a plain list: one per line, bullets and numbers dropped
        hypotheses = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in reply.splitlines()]
        hypotheses = [h for h in hypotheses if h]
    return hypotheses


def _parse_tests(reply: str) -> tuple[list[str], list[str]]:
    found = _json_in(reply)
    if not isinstance(found, dict):
        return [], []
    return _strings(found.get("activating")), _strings(found.get("non_activating"))


def _parse_verdict(reply: str, hypothesis: str) -> tuple[str, str]:
    found = _json_in(reply)
    if isinstance(found, dict):
        verdict = str(found.get("verdict", "")).strip().lower()
        refined = str(found.get("hypothesis") or "").strip() or hypothesis
    else:  # free text: take the first verdict word it names
        match = re.search(r"\b(confirmed|refuted|refined)\b", reply.lower())
        verdict, refined = (match.group(1) if match else ""), hypothesis
    return (verdict if verdict in ("confirmed", "refuted", "refined") else "refined"), refined


def format_exemplar(context: Context) -> str:
    """The window as one line with the focus token marked, then its activation."""
    t = context.tokens
    text = "".join(t[: context.focus]) + "<<" + t[context.focus] + ">>" + "".join(t[context.focus + 1 :])
    return f"{text.strip()!r}  (activation {context.activation:.3g})"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def explain_with_llm(
    client: ChatClient,
    contexts: list[Context],
    activate: Callable[[list[str]], list[float]],
    *,
    n_hypotheses: int = 3,
    n_tests: int = 3,
    rounds: int = 2,
) -> Explanation:
    """Run the loop of the module docstring on one feature's top ``contexts``.

    ``activate(texts)`` must return the feature's max activation over each text's tokens (one float
    per text, same order). ``evidence`` of the result holds every measured test text:
    ``{"round", "hypothesis", "text", "expected" (should it fire), "activation"}``.
    """
    if not contexts:
        raise ValueError("explain_with_llm: no activating contexts to explain (the feature never fired)")
    top = max(c.activation for c in contexts) or 1.0
    exemplars = "\n".join(f"{i + 1}. {format_exemplar(c)}" for i, c in enumerate(contexts))
    live = _parse_hypotheses(client.ask(PROMPTS["hypotheses"].format(exemplars=exemplars, n=n_hypotheses)))
    live = live[:n_hypotheses]
    evidence: list[dict] = []
    history: list[dict] = []
    for round_ in range(1, rounds + 1):
        tested, kept = [], []
        for hypothesis in live:
            should, should_not = _parse_tests(client.ask(PROMPTS["tests"].format(hypothesis=hypothesis, n=n_tests)))
            texts = should + should_not
            if not texts:
                history.append({"round": round_, "hypothesis": hypothesis, "verdict": "untested", "separation": None})
                continue
            values = [float(v) for v in activate(texts)]
            if len(values) != len(texts):
                raise ValueError(f"activate returned {len(values)} activations for {len(texts)} texts")
            expected = [True] * len(should) + [False] * len(should_not)
            evidence += [
                {"round": round_, "hypothesis": hypothesis, "text": t, "expected": e, "activation": v}
                for t, e, v in zip(texts, expected, values)
            ]
            separation = (_mean(values[: len(should)]) - _mean(values[len(should) :])) / top
            results = "\n".join(
                f"- [{'should fire' if e else 'should not fire'}] {t!r}: {v:.3g}"
                for t, e, v in zip(texts, expected, values)
            )
            reply = client.ask(PROMPTS["verdict"].format(hypothesis=hypothesis, top=top, results=results))
            verdict, refined = _parse_verdict(reply, hypothesis)
            record = {
                "round": round_,
                "hypothesis": hypothesis,
                "verdict": verdict,
                "refined": refined,
                "separation": separation,
            }
            history.append(record)
            tested.append(record)
            if verdict != "refuted":
                kept.append(refined)
        if not kept and tested:  # all refuted: keep refining the least bad rather than stop with nothing
            kept = [max(tested, key=lambda r: r["separation"])["refined"]]
        live = list(dict.fromkeys(kept))
        if not live:
            break
    lines = []
    for r in history:
        if r["separation"] is None:
            lines.append(f'- round {r["round"]}: "{r["hypothesis"]}": the tests could not be read')
        else:
            lines.append(
                f'- round {r["round"]}: "{r["hypothesis"]}": {r["verdict"]}'
                + (f' as "{r["refined"]}"' if r["refined"] != r["hypothesis"] else "")
                + f"; separation {r['separation']:.2f}"
            )
    reply = client.ask(PROMPTS["conclude"].format(exemplars=exemplars, history="\n".join(lines) or "(none)"))
    text = reply.strip().strip('"').strip()
    if not text:  # an empty conclusion: fall back to the surviving hypothesis
        text = live[0] if live else "no explanation"
    return Explanation(text=text, method="llm", evidence=evidence, detection=None)


_YES_NO = re.compile(r"\b(yes|no)\b")
_ECHO = re.compile(r"\s*(?:or|/)\s*(?:yes|no)\b")  # "yes or no", "yes/no" after the first one


def yes_or_no(reply: str) -> bool | None:
    """True for yes, False for no, None when the reply is malformed (module docstring, "Judges").

    Read: a JSON object's first string value (``{"answer": "Yes"}``), else the reply itself; lowercased, the
    first word "yes" or "no" decides ("**Yes.**", "Answer: no", "I think yes"), unless the other one follows
    straight after it ("yes or no", "yes/no": the question echoed, not answered).
    """
    found = _json_in(reply) if "{" in reply else None
    if isinstance(found, dict):
        reply = next((v for v in found.values() if isinstance(v, str)), "")
    first = _YES_NO.search(reply.lower())
    if first is None or _ECHO.match(reply.lower(), first.end()):
        return None
    return first.group(1) == "yes"


@dataclass
class Verdicts:
    """How a judge's replies were read: yes, no, and malformed (counted as no)."""

    yes: int = 0
    no: int = 0
    malformed: int = 0

    def read(self, reply: str) -> bool:
        answer = yes_or_no(reply)
        if answer is None:
            self.malformed += 1
        elif answer:
            self.yes += 1
        else:
            self.no += 1
        return bool(answer)


def llm_predictor(
    client: ChatClient, explanation: Explanation, verdicts: Verdicts | None = None
) -> Callable[[Context], bool]:
    """Detection predictor: asks the LLM whether the feature fires in a context's text (yes/no)."""
    verdicts = verdicts if verdicts is not None else Verdicts()

    def predict(context: Context) -> bool:
        reply = client.ask(PROMPTS["detect"].format(explanation=explanation.text, text="".join(context.tokens)))
        return verdicts.read(reply)

    return predict


def llm_judge(
    client: ChatClient, explanation: Explanation, verdicts: Verdicts | None = None
) -> Callable[[HighlightedContext], bool]:
    """Fuzzing judge: shows the explanation and the window with its highlighted tokens marked <<like this>>
    (``HighlightedContext.marked_text``), asks whether they are the ones the feature fires on (yes/no)."""
    verdicts = verdicts if verdicts is not None else Verdicts()

    def judge(example: HighlightedContext) -> bool:
        reply = client.ask(PROMPTS["fuzz"].format(explanation=explanation.text, text=example.marked_text()))
        return verdicts.read(reply)

    return judge
