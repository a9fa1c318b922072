"""`edgeml serve` of a language-model bundle: the tiny Llama (tests/tiny_lm.py) built by ONNX Runtime GenAI's model
builder (int4), served on loopback and asked over plain HTTP in the shapes OpenAI's clients send: answers equal to
the greedy decode of the same prompt by the runtime's Generator, streamed or not, OpenAI's response and chunk shapes,
a corpus of malformed requests that each get their 4xx, /metrics, a full queue (503), and a client that disconnects
mid-stream, which stops its generation."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import servers
from servers import AUTH, running

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("transformers")

CONTEXT = 512
SLOW_S = 0.01                   # per token, on the server whose generations are slowed to be stopped midway
# `edgeml serve` with the runtime's token iterator slowed (a test's hook; nothing else differs)
SLOW_SERVE = f"""
import sys, time
from edgeml.runtimes import onnxruntime_genai
stream = onnxruntime_genai.OrtGenaiGenerator.stream
def slow(self, *args):
    tokens = stream(self, *args)
    try:
        for token in tokens:
            time.sleep({SLOW_S})
            yield token
    finally:
        tokens.close()
onnxruntime_genai.OrtGenaiGenerator.stream = slow
from edgeml.cli import main
main()
"""
QUESTION = [{"role": "user", "content": "What is a class?"}]
PROMPT = "def f(x):"


@pytest.fixture(scope="module")
def built(tiny_lm, tmp_path_factory) -> Path:
    """The tiny LM's bundle, as the optimize pipeline lays it out, its model built with int4 weights."""
    root = tmp_path_factory.mktemp("lm")
    hf = tiny_lm
    bundle = root / "bundle"
    with open(root / "builder.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
                               str(bundle / "model"), "-p", "int4", "-e", "cpu"], stdout=log, stderr=subprocess.STDOUT,
                              cwd=root, timeout=600)
    assert done.returncode == 0, (root / "builder.log").read_text()[-2000:]
    write_manifest(bundle, [0])
    return bundle


def write_manifest(bundle: Path, eos: list[int]) -> None:
    (bundle / "manifest.json").write_text(json.dumps({
        "kind": "language-model", "manifest_version": 2, "name": "tiny-llama", "runtime": "onnxruntime-genai",
        "model": "model", "files": [],
        "precision": "int4", "generation": {"max_new_tokens": 128, "context_length": CONTEXT, "eos_token_ids": eos}}))


class Greedy:
    """The bundle's model opened directly with its runtime: what the server must answer."""

    def __init__(self, bundle: Path, stop: set[int]):
        from transformers import AutoTokenizer

        from edgeml.runtimes.generation import GENERATION_RUNTIMES

        self.tokenizer = AutoTokenizer.from_pretrained(bundle / "model")
        self.generator = GENERATION_RUNTIMES["onnxruntime-genai"].open(bundle / "model", 1)
        self.stop = stop

    def ids(self, messages=None, prompt=None) -> list[int]:
        if messages is None:
            return self.tokenizer(prompt)["input_ids"]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def tokens(self, ids: list[int], max_tokens: int) -> list[int]:
        return list(self.generator.stream(ids, max_tokens, self.stop))

    def answer(self, max_tokens: int, **prompt) -> tuple[str, int, str]:
        """(text, completion tokens, finish reason)."""
        tokens = self.tokens(self.ids(**prompt), max_tokens)
        text = self.tokenizer.decode([t for t in tokens if t not in self.stop], skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
        return text, len(tokens), "stop" if tokens[-1] in self.stop or len(tokens) < max_tokens else "length"


@pytest.fixture(scope="module")
def stopping(built, tmp_path_factory) -> tuple[Path, Greedy, int]:
    """A copy of the bundle that also stops at a token the question's greedy answer reaches at its index `at`."""
    bundle = Path(shutil.copytree(built, tmp_path_factory.mktemp("stopping") / "bundle"))
    plain = Greedy(bundle, {0})
    tokens = plain.tokens(plain.ids(QUESTION), 40)
    at = next((i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i]), None)
    assert at is not None, f"the tiny LM's greedy answer repeats one token: {tokens}"
    write_manifest(bundle, [0, tokens[at]])
    plain.stop = {0, tokens[at]}
    return bundle, plain, at


@pytest.fixture(scope="module")
def greedy(stopping) -> Greedy:
    return stopping[1]


@pytest.fixture(scope="module")
def server(stopping):
    with running(stopping[0]) as client:
        yield client
    assert "Traceback" not in client.stderr, client.stderr


@pytest.fixture(scope="module")
def slow_server(built):
    """The plain bundle (it never stops early) on a server that generates a token every SLOW_S, one may wait."""
    def slow_serve(bundle, port, *flags):
        return subprocess.Popen([sys.executable, "-c", SLOW_SERVE, "serve", str(bundle), "--port", str(port),
                                 "--threads", "1", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(servers, "edgeml_serve", slow_serve)
        with running(built, "--max-queue", "1") as client:
            yield client
    assert "Traceback" not in client.stderr, client.stderr


def post(server, path: str, body: dict | bytes, headers: dict | None = None) -> tuple[int, dict | bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = server.request("POST", path, data, "application/json", headers)
    return status, answer if answer.startswith(b"data:") else json.loads(answer)


def events(data: bytes) -> list:
    """The server-sent events of a whole stream: chunks as dicts, and "[DONE]"."""
    assert data.endswith(b"\n\n"), data[-200:]
    found = []
    for block in data.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        found.append(block[6:] if block == "data: [DONE]" else json.loads(block[6:]))
    return found


class Stream:
    """A streamed request read event by event, to be dropped midway."""

    def __init__(self, port: int, body: dict):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}).encode(),
                                {**AUTH, "Content-Type": "application/json"})
        self.response = self.connection.getresponse()

    def next(self) -> dict | str:
        line = self.response.readline()
        assert line.startswith(b"data: "), line
        assert self.response.readline() == b"\n"
        return line[6:].decode().strip() if line.startswith(b"data: [DONE]") else json.loads(line[6:])

    def drop(self) -> None:
        self.connection.sock.shutdown(2)
        self.response.close()
        self.connection.close()


def test_chat_answers_the_greedy_decode_in_openai_shape(server, greedy):
    status, answer = post(server, "/v1/chat/completions", {"model": "tiny-llama", "messages": QUESTION,
                                                           "max_tokens": 40})
    assert status == 200, answer
    text, count, finish = greedy.answer(40, messages=QUESTION)
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == "tiny-llama" and isinstance(answer["created"], int)
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                  "finish_reason": finish}]
    prompt = len(greedy.ids(QUESTION))
    assert answer["usage"] == {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}


def test_a_stop_token_ends_the_answer_and_is_left_out(server, greedy, stopping):
    at = stopping[2]
    status, answer = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 40})
    choice = answer["choices"][0]
    assert status == 200 and choice["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == at + 1
    kept = greedy.tokens(greedy.ids(QUESTION), at)
    assert choice["message"]["content"] == greedy.tokenizer.decode(kept, skip_special_tokens=True,
                                                                   clean_up_tokenization_spaces=False)
    status, answer = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": at})
    assert status == 200 and answer["choices"][0]["finish_reason"] == "length"


def test_completion_answers_the_greedy_decode_in_openai_shape(server, greedy):
    status, answer = post(server, "/v1/completions", {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 30})
    assert status == 200, answer
    text, count, finish = greedy.answer(30, prompt=PROMPT)
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert answer["choices"] == [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    assert answer["usage"]["completion_tokens"] == count
    assert answer["usage"]["prompt_tokens"] == len(greedy.ids(prompt=PROMPT))


def test_without_max_tokens_the_bundle_default_applies(server, greedy):
    status, answer = post(server, "/v1/completions", {"prompt": PROMPT})
    assert status == 200 and answer["choices"][0]["text"] == greedy.answer(128, prompt=PROMPT)[0]


@pytest.mark.parametrize("path, prompt", [("/v1/chat/completions", {"messages": QUESTION}),
                                          ("/v1/completions", {"prompt": PROMPT})], ids=["chat", "completion"])
def test_a_stream_adds_up_to_the_whole_answer(server, path, prompt):
    body = {**prompt, "max_tokens": 40}
    status, whole = post(server, path, body)
    assert status == 200
    status, data = post(server, path, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200
    chunks = events(data)
    assert chunks[-1] == "[DONE]" and chunks.count("[DONE]") == 1
    *pieces, last, used = chunks[:-1]
    assert used["choices"] == [] and used["usage"] == whole["usage"]
    assert len({c["id"] for c in chunks[:-1]}) == 1 and last["choices"][0]["finish_reason"] == \
        whole["choices"][0]["finish_reason"]
    if path == "/v1/chat/completions":
        assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
        assert pieces[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert last["choices"][0]["delta"] == {}
        text = "".join(c["choices"][0]["delta"]["content"] for c in pieces)
        assert text == whole["choices"][0]["message"]["content"]
    else:
        assert all(c["object"] == "text_completion" for c in chunks[:-1])
        assert "".join(c["choices"][0]["text"] for c in pieces) == whole["choices"][0]["text"]
    assert all(c["choices"][0]["finish_reason"] is None for c in pieces) and len(pieces) > 1


def test_openai_client_request_shapes(server, greedy):
    """What openai-python sends: its headers, null and neutral parameters, content parts, max_completion_tokens,
    a temperature (accepted; the answer says decoding is greedy)."""
    headers = {**AUTH, "Accept": "application/json", "User-Agent": "OpenAI/Python 1.99.0", "X-Stainless-Lang": "python"}
    body = {"model": "tiny-llama", "messages": [{"role": "system", "content": "Answer briefly."},
                                                {"role": "user", "content": [{"type": "text", "text": "What is "},
                                                                             {"type": "text", "text": "a class?"}]}],
            "max_completion_tokens": 20, "temperature": 0.7, "top_p": 0.9, "n": 1, "stop": None, "seed": 1,
            "user": "me", "frequency_penalty": 0, "logprobs": False}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                       {**headers, "Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 200 and response.getheader("X-Edgeml-Decoding") == "greedy", answer
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is a class?"}]
    assert answer["choices"][0]["message"]["content"] == greedy.answer(20, messages=messages)[0]
    status, data = server.request("GET", "/v1/models")
    assert status == 200 and json.loads(data)["data"][0]["id"] == "tiny-llama"
    assert json.loads(data)["object"] == "list" and json.loads(data)["data"][0]["object"] == "model"
    health = server.health()
    assert health["status"] == "ok" and health["kind"] == "language-model" and health["decoding"] == "greedy"


CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
# (id, method, path, body, status, a word the one-line message has)
CORPUS = [
    ("json-malformed", "POST", CHAT, b'{"messages": ', 400, "not valid json"),
    ("json-not-utf8", "POST", CHAT, b"\xff\xfe{", 400, "not valid json"),
    ("json-a-list", "POST", CHAT, b"[1]", 400, "json object"),
    ("unknown-model", "POST", CHAT, {"model": "gpt-4o", "messages": QUESTION}, 404, "does not exist"),
    ("unknown-model-text", "POST", TEXT, {"model": "tiny", "prompt": PROMPT}, 404, "does not exist"),
    ("max-tokens-beyond-context", "POST", CHAT, {"messages": QUESTION, "max_tokens": CONTEXT}, 400, "context of 512"),
    ("prompt-beyond-context", "POST", TEXT, {"prompt": "x y " * CONTEXT}, 400, "context of 512"),
    ("max-tokens-zero", "POST", CHAT, {"messages": QUESTION, "max_tokens": 0}, 400, "positive integer"),
    ("max-tokens-negative", "POST", TEXT, {"prompt": PROMPT, "max_tokens": -5}, 400, "positive integer"),
    ("max-tokens-string", "POST", CHAT, {"messages": QUESTION, "max_tokens": "10"}, 400, "positive integer"),
    ("max-tokens-float", "POST", CHAT, {"messages": QUESTION, "max_tokens": 1.5}, 400, "positive integer"),
    ("max-tokens-bool", "POST", TEXT, {"prompt": PROMPT, "max_tokens": True}, 400, "positive integer"),
    ("max-tokens-twice", "POST", CHAT, {"messages": QUESTION, "max_tokens": 5, "max_completion_tokens": 5}, 400,
     "not both"),
    ("no-messages", "POST", CHAT, {"model": "tiny-llama"}, 400, "messages must be"),
    ("messages-a-string", "POST", CHAT, {"messages": "hello"}, 400, "messages must be"),
    ("messages-empty", "POST", CHAT, {"messages": []}, 400, "non-empty list"),
    ("message-a-string", "POST", CHAT, {"messages": ["hello"]}, 400, '"role" and "content"'),
    ("message-no-role", "POST", CHAT, {"messages": [{"content": "hi"}]}, 400, '"role" and "content"'),
    ("message-no-content", "POST", CHAT, {"messages": [{"role": "user"}]}, 400, '"role" and "content"'),
    ("message-unknown-role", "POST", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "unknown role"),
    ("message-content-number", "POST", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "content must"),
    ("message-image-part", "POST", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "content must"),
    ("message-tool-calls", "POST", CHAT, {"messages": [{"role": "assistant", "content": "", "tool_calls": []}]}, 400,
     "unsupported fields: tool_calls"),
    ("prompt-empty", "POST", TEXT, {"prompt": ""}, 400, "empty"),
    ("prompt-missing", "POST", TEXT, {"max_tokens": 5}, 400, "prompt must be"),
    ("prompt-token-ids", "POST", TEXT, {"prompt": [1, 2, 3]}, 400, "token ids"),
    ("prompt-two", "POST", TEXT, {"prompt": ["a", "b"]}, 400, "one prompt per request"),
    ("n-2", "POST", CHAT, {"messages": QUESTION, "n": 2}, 400, "n=2 is not supported"),
    ("best-of-3", "POST", TEXT, {"prompt": PROMPT, "best_of": 3}, 400, "best_of=3"),
    ("stop-sequences", "POST", CHAT, {"messages": QUESTION, "stop": ["\n"]}, 400, "stop="),
    ("logprobs", "POST", CHAT, {"messages": QUESTION, "logprobs": True}, 400, "logprobs=true"),
    ("tools", "POST", CHAT, {"messages": QUESTION, "tools": [{"type": "function"}]}, 400, "tools="),
    ("unknown-parameter", "POST", CHAT, {"messages": QUESTION, "beam_width": 4}, 400, "unsupported parameter"),
    ("chat-parameter-on-text", "POST", TEXT, {"prompt": PROMPT, "messages": QUESTION}, 400, "'messages'"),
    ("temperature-out-of-range", "POST", CHAT, {"messages": QUESTION, "temperature": 5}, 400, "temperature"),
    ("stream-a-string", "POST", CHAT, {"messages": QUESTION, "stream": "yes"}, 400, "stream must be"),
    ("stream-options-alone", "POST", CHAT, {"messages": QUESTION, "stream_options": {"include_usage": True}}, 400,
     "only allowed with stream"),
    ("get-chat", "GET", CHAT, None, 405, "allowed: post"),
    ("post-models", "POST", "/v1/models", {}, 405, "allowed: get"),
    ("unknown-path", "GET", "/v1/embeddings", None, 404, "no such path /v1/embeddings"),
]


@pytest.mark.parametrize("method, path, body, status, word", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_malformed_request_gets_its_4xx_and_an_openai_error(server, method, path, body, status, word):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = server.request(method, path, data, "application/json" if data is not None else None)
    error = json.loads(answer)["error"]
    assert got == status, error
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"], error
    assert word in error["message"].lower(), error["message"]
    assert server.process.poll() is None


def test_the_token_is_required_and_refused_in_openai_shape(server):
    status, answer = post(server, CHAT, {"messages": QUESTION}, headers={})
    assert status == 401 and "bearer token" in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"


def test_metrics_have_the_generation_series(server, greedy):
    before = server.metrics()
    status, answer = post(server, TEXT, {"prompt": PROMPT, "max_tokens": 30})
    assert status == 200
    post(server, CHAT, {"messages": "hello"})
    after = server.metrics()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("edgeml_serve_generated_tokens_total") == answer["usage"]["completion_tokens"] > 1
    assert delta("edgeml_serve_prompt_tokens_total") == answer["usage"]["prompt_tokens"]
    assert delta("edgeml_serve_time_to_first_token_seconds_count") == 1
    assert delta("edgeml_serve_time_to_first_token_seconds_bucket", le="+Inf") == 1
    assert delta("edgeml_serve_decode_tokens_per_second_count") == 1
    assert delta("edgeml_serve_decode_tokens_per_second_sum") > 0
    assert after[("edgeml_serve_queue_length", ())] == 0
    assert delta("edgeml_serve_requests_total", path=TEXT, code="200") == 1
    assert delta("edgeml_serve_requests_total", path=CHAT, code="400") == 1
    assert delta("edgeml_serve_errors_total", kind="bad_messages") == 1


def settle(server, name: str, timeout: float = 10) -> float:
    """The value of `name` in /metrics once it has not changed for a while."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = server.metrics().get((name, ()), 0)
        if value == last:
            return value
        last = value
        time.sleep(20 * SLOW_S)
    raise AssertionError(f"{name} was still changing after {timeout} s")


def wait_for(server, name: str, value: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while server.metrics().get((name, ()), 0) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(SLOW_S)


def test_a_client_that_disconnects_stops_its_generation(slow_server):
    long = {"messages": QUESTION, "max_tokens": 400}            # 4 s of tokens, unless it stops
    before = settle(slow_server, "edgeml_serve_generated_tokens_total")
    stream = Stream(slow_server.port, long)
    assert stream.response.status == 200 and stream.next()["choices"][0]["delta"]["role"] == "assistant"
    for _ in range(5):
        stream.next()
    stream.drop()
    generated = settle(slow_server, "edgeml_serve_generated_tokens_total") - before
    assert 5 <= generated < 100, generated
    status, answer = post(slow_server, CHAT, {"messages": QUESTION, "max_tokens": 3})
    assert status == 200 and answer["usage"]["completion_tokens"] == 3


def test_a_full_queue_is_503_and_a_dropped_waiter_never_runs(slow_server):
    long = {"messages": QUESTION, "max_tokens": 400}
    before = settle(slow_server, "edgeml_serve_generated_tokens_total")
    first = Stream(slow_server.port, long)
    first.next()                                                # the role
    first.next()                                                # a token: it generates
    waiting = Stream(slow_server.port, long)
    assert waiting.response.status == 200 and waiting.next()["choices"][0]["delta"]["role"] == "assistant"
    wait_for(slow_server, "edgeml_serve_queue_length", 1)
    status, answer = post(slow_server, CHAT, {"messages": QUESTION, "max_tokens": 3})
    assert status == 503 and "generator is busy and 1 requests wait" in answer["error"]["message"], answer
    assert "\n" not in answer["error"]["message"]
    waiting.drop()
    first.drop()
    wait_for(slow_server, "edgeml_serve_queue_length", 0)
    generated = settle(slow_server, "edgeml_serve_generated_tokens_total") - before
    assert generated < 100, generated                           # neither the first nor the dropped waiter ran on
    status, answer = post(slow_server, CHAT, {"messages": QUESTION, "max_tokens": 3})
    assert status == 200, answer
