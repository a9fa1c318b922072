"""The OpenAI-compatible shapes a language-model bundle is served in: a request's JSON body checked into a
`Completion` (or refused with a RequestError: its 4xx and one line), the responses and stream chunks of
/v1/chat/completions and /v1/completions, and `TextDeltas`, the text of a growing token list told piece by piece.

Decoding is greedy: `temperature`, `top_p` and `seed` are accepted and change nothing. A parameter that would
change the answer in a way this server cannot (n > 1, stop sequences, penalties, logprobs, tools, ...) is a 400
unless it has the value that changes nothing; a parameter OpenAI does not define is a 400 too.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeml.serve.decode import RequestError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
GREEDY = {"temperature": (0, 2), "top_p": (0, 1)}           # accepted within these bounds; greedy runs anyway
IGNORED = {"user", "seed"}
# accepted only with the value that changes nothing (null is always accepted, as absent)
NEUTRAL = {"n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False,), "top_logprobs": (0,), "stop": ([],),
           "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},), "suffix": ("",),
           "tools": ([],), "tool_choice": ("none",), "response_format": ({"type": "text"},)}
COMMON = {"model", "stream", "stream_options", "max_tokens", *GREEDY, *IGNORED}
CHAT = COMMON | {"messages", "max_completion_tokens"} | {k for k in NEUTRAL if k not in ("best_of", "echo", "suffix")}
TEXT = COMMON | {"prompt"} | {k for k in NEUTRAL if k not in ("top_logprobs", "tools", "tool_choice",
                                                                "response_format")}


@dataclass(frozen=True)
class Completion:
    """A checked request: `messages` (chat) or `prompt` (text completion)."""
    chat: bool
    messages: list[dict] | None
    prompt: str | None
    max_tokens: int | None              # None: the bundle's default
    stream: bool
    include_usage: bool


def _bad(message: str, kind: str = "bad_request", status: int = 400) -> RequestError:
    return RequestError(status, kind, message)


def _same(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse(body: bytes, chat: bool, model: str) -> Completion:
    """The request of POST /v1/chat/completions (`chat`) or /v1/completions for the served `model`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise _bad(f"the body is not valid JSON: {str(e).splitlines()[0][:120]}", "malformed_json") from None
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object", "malformed_json")
    data = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(data) - (CHAT if chat else TEXT))
    if unknown:
        raise _bad(f"unsupported parameter {unknown[0]!r} for {'/v1/chat/completions' if chat else '/v1/completions'}",
                   "unsupported_parameter")
    if "model" in data and data["model"] != model:
        raise _bad(f"the model {str(data['model'])[:100]!r} does not exist: this server serves {model!r}",
                   "unknown_model", 404)
    for name, allowed in NEUTRAL.items():
        if name in data and not any(_same(data[name], a) for a in allowed):
            raise _bad(f"{name}={json.dumps(data[name])[:60]} is not supported (only {json.dumps(allowed[0])}): this "
                       "server generates one greedy answer", "unsupported_parameter")
    for name, (low, high) in GREEDY.items():
        if name in data and not (_number(data[name]) and low <= data[name] <= high):
            raise _bad(f"{name} must be a number from {low} to {high} (decoding is greedy whatever it is)")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise _bad("stream must be true or false")
    stream = data.get("stream", False)
    options = data.get("stream_options", {})
    if options and not stream:
        raise _bad("stream_options is only allowed with stream: true")
    if not isinstance(options, dict) or set(options) - {"include_usage"} or \
            not isinstance(options.get("include_usage", False), bool):
        raise _bad('stream_options must be {"include_usage": true|false}')
    return Completion(chat, _messages(data) if chat else None, None if chat else _prompt(data),
                      _max_tokens(data, chat), stream, options.get("include_usage", False))


def _max_tokens(data: dict, chat: bool) -> int | None:
    given = [k for k in ("max_tokens", "max_completion_tokens") if k in data]
    if len(given) > 1:
        raise _bad("give max_tokens or max_completion_tokens, not both")
    value = data[given[0]] if given else None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _bad(f"{given[0]} must be a positive integer, not {json.dumps(value)[:40]}", "bad_max_tokens")
    return value


def _messages(data: dict) -> list[dict]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad('messages must be a non-empty list of {"role": ..., "content": ...}', "bad_messages")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _bad(f'messages[{i}] must be an object with "role" and "content"', "bad_messages")
        if extra := sorted(set(m) - {"role", "content", "name"}):
            raise _bad(f"messages[{i}] has unsupported fields: {', '.join(extra)}", "bad_messages")
        if m["role"] not in ROLES:
            raise _bad(f"messages[{i}] has the unknown role {str(m['role'])[:40]!r}: use one of "
                       f"{', '.join(ROLES)}", "bad_messages")
        checked.append({"role": ROLES[m["role"]], "content": _content(m["content"], i)})
    return checked


def _content(content, i: int) -> str:
    """A message's text: a string, or a list of {"type": "text", "text": ...} parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise _bad(f'messages[{i}].content must be a string or a list of {{"type": "text", "text": ...}} parts',
               "bad_messages")


def _prompt(data: dict) -> str:
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string (one prompt per request; token ids are not taken)", "bad_prompt")
    if not prompt:
        raise _bad("the prompt is empty", "empty_prompt")
    return prompt


def error(message: str, status: int) -> dict:
    """OpenAI's error body."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class Shapes:
    """The response objects of one request, all with its id, creation time and model name."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def _head(self, chunk: bool) -> dict:
        kind = ("chat.completion" + ".chunk" * chunk) if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def response(self, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict:
        choice = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return {**self._head(False), "choices": [{"index": 0, **choice, "logprobs": None, "finish_reason": finish}],
                "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, text: str | None = None, finish: str | None = None, role: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
            choice = {"delta": delta}
        else:
            choice = {"text": text or ""}
        return {**self._head(True), "choices": [{"index": 0, **choice, "logprobs": None, "finish_reason": finish}]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        return {**self._head(True), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def event(data: dict | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


class TextDeltas:
    """The text of a growing list of token ids, piece by piece: `add` returns the characters that are new, holding
    back trailing U+FFFD (a character whose remaining UTF-8 bytes are in tokens yet to come); `flush` the rest."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode, self.ids, self.sent = decode, [], 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        end = len(text.rstrip("\ufffd"))
        new, self.sent = text[self.sent:end], max(self.sent, end)
        return new

    def flush(self) -> str:
        text = self.decode(self.ids)
        new, self.sent = text[self.sent:], len(text)
        return new
