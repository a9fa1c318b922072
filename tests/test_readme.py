"""README.md, executed. Its fenced blocks are read and classified: command lines run against the digits example
(the README's placeholders mapped to real files, below), with the output the README shows for them checked;
the Python snippet runs; YAML blocks load as what they describe; listings of output folders are compared with
real ones; and every command's synopsis agrees with its --help (options, choices and defaults). The blocks of the
language-model sections run against the tiny LM of tests/tiny_lm.py instead.

Commands run in this process through click's CliRunner (`edgeml ...`), or as processes (`python`, `curl`); the
server the `curl` lines ask is `edgeml serve` of the block's bundle (the example's, or the tiny LM's) on a free
loopback port."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from servers import Client, edgeml_serve, free_port, stop

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
COMMAND_WORDS = ("edgeml", "python", "curl", "pip", "make", "ray", "bash")
GRAMMAR = re.compile(r"\[-|\]|\w\|\w")          # option grammar: [--opt ...], NAME[:DTYPE], a|b

# What the README's placeholders stand for here: files in each block's folder (made from the digits example)...
FILES = ("model.onnx", "model.pt2", "calib.npz", "eval.npz", "train.npz", "sd.pt", "input.npz", "my-board.yaml",
         "OUT")
# ... and words of its command lines, replaced as they are (whole arguments, or parts of a URL)
WORDS = {
    "MODEL": "model.pt2",                          # a PyTorch model, so that a jetson bundle holds TensorRT's files
    "pkg.models:resnet": "edgeml.examples:DigitsCNN",
    "1x3x224x224": "1x1x8x8",
    "PATH/bundle": "some/folder/bundle",           # where `edgeml ship OUT/bundle --to /some/folder` put it
    "/some/folder": "some/folder",
    "...": "--calib-data calib.npz --eval-data eval.npz",
}
# The blocks of these sections (headings) are about language models: their placeholders are LM_FILES, made from the
# tiny LM (a GGUF file written from it, a copy of its Hugging Face folder, folders of .txt documents, and OUT, the
# run of LM_LINE, done once for them all)
LM_SECTIONS = ("Small language models", "Language models")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_FILES = (GGUF, "my-llama", "docs", "notes", "OUT")
LM_LINE = f"edgeml optimize {GGUF} --target cpu"
URL = ("localhost:8000", "127.0.0.1:{port}")
METAVARS = {"N": "1", "S": "0.05"}                # values of a synopsis line that runs (RUN_SYNOPSIS)
# Synopsis lines among commands that run too: with their optional parts given, the first of each a|b, METAVARS
RUN_SYNOPSIS = ("edgeml profile PATH/bundle ", "edgeml report OUT --merge ", "edgeml doctor ")
# Arguments added to a command line (matched by its start): an output folder of its own where two lines write the
# same one, what a `...` that starts the arguments stands for, and the settings that make it run in seconds (the
# pruned model is distilled for 2 epochs on train.npz, 256 samples)
FAST = {
    "edgeml optimize pkg.models:resnet ": "-o out-pruned/ --distill-epochs 2 --precision fp32",
    "edgeml optimize ... --track mlflow": "model.onnx --target jetson --calib-data calib.npz --eval-data eval.npz "
                                          "-o out-tracked",
    "edgeml optimize MODEL --target jetson --profile jetson-orin-nx ": "-o out-orin-nx",
    "edgeml optimize MODEL --target jetson --profile my-board.yaml ": "-o out-my-board",
    LM_LINE: "--precision fp32",                   # one build (the other LM line makes the INT8 ones)
    "edgeml optimize ": "--threads 1 --measure-seconds 0.05",
}
# The command lines that cannot run here, and why
SKIP = {
    "ray start ": "starts a Ray cluster node",
    "edgeml sweep SWEEP.yaml -o /shared/out --address auto": "needs a Ray cluster and a file system its nodes share",
    "edgeml serve OUT/bundle": "serves until stopped (the curl lines ask the server this file starts for their block)",
}


# ---------------------------------------------------------------------------------------------------------------
# README.md, read


@dataclass
class Entry:
    """A command line of a block (its continuation lines joined), with its comment and the lines it prints."""
    line: int
    text: str
    comment: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def word(self) -> str:
        return self.text.split()[0]

    @property
    def synopsis(self) -> bool:
        return bool(GRAMMAR.search(_unquoted(self.text)))

    @property
    def runs(self) -> bool:
        return not self.synopsis or self.text.startswith(RUN_SYNOPSIS)


@dataclass
class Block:
    line: int                 # the line of its opening fence
    lang: str
    lines: list[str]
    entries: list[Entry]
    section: str = ""         # the heading it is under

    @property
    def language_model(self) -> bool:
        return self.section in LM_SECTIONS

    @property
    def kind(self) -> str:
        """python, yaml, commands (some line runs), synopsis (command grammar only) or listing (no command)."""
        if self.lang:
            return self.lang
        if any(e.runs for e in self.entries):
            return "commands"
        return "synopsis" if self.entries else "listing"


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def _split_comment(raw: str) -> tuple[str, str]:
    """A command line's text and its comment (from a `#` that starts a word, outside quotes)."""
    quote = None
    for i, c in enumerate(raw):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or raw[i - 1].isspace()):
            return raw[:i].rstrip(), raw[i + 1:].strip()
    return raw.rstrip(), ""


def _entries(lines: list[str], first: int) -> list[Entry]:
    entries: list[Entry] = []
    joining = False
    for number, raw in enumerate(lines, first):
        text, comment = _split_comment(raw)
        words = text.split()
        continues = entries and not entries[-1].output and raw[:1].isspace() and (not words or words[0][0] in "[-")
        if joining or continues:
            entries[-1].text += " " + text.strip().removesuffix("\\").strip()
            entries[-1].comment = " ".join(filter(None, (entries[-1].comment, comment)))
        elif words and words[0] in COMMAND_WORDS:
            entries.append(Entry(number, text.strip().removesuffix("\\").strip(), comment))
        elif words and entries:
            entries[-1].output.append(raw.strip())
        joining = text.endswith("\\")
    return entries


def read_blocks(text: str) -> list[Block]:
    blocks, current, section = [], None, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.fullmatch(r"\s*```(\w*)\s*", line)
        heading = re.fullmatch(r"#+ (.*)", line)
        if heading and current is None:
            section = heading.group(1).strip()
        elif fence and current is None:
            current = Block(number, fence.group(1), [], [], section)
        elif fence:
            current.entries = _entries(current.lines, current.line + 1)
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"README.md:{current.line}: a fenced block is never closed"
    return blocks


BLOCKS = read_blocks(README.read_text())


def blocks(kind: str) -> list:
    return [pytest.param(b, id=f"L{b.line}") for b in BLOCKS if b.kind == kind]


def listing(first: str) -> Block:
    """The listing block whose first line starts with `first`."""
    found = [b for b in BLOCKS if b.kind == "listing" and b.lines[0].startswith(first)]
    assert len(found) == 1, f"README.md has {len(found)} listings starting with {first!r}"
    return found[0]


# ---------------------------------------------------------------------------------------------------------------
# Where the commands run


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    args: list[str]
    folder: Path


class Workspace:
    """Each block's commands run in a folder of their own: the placeholder FILES, and a copy of the example's OUT
    (a language-model block's: LM_FILES from `lm`, and a copy of LM_LINE's OUT)."""

    def __init__(self, root: Path, inputs: Path, monkeypatch):
        self.root, self.inputs, self.monkeypatch = root, inputs, monkeypatch
        self.port: int | None = None

    def folder(self, block: Block, lm: Path | None = None) -> Path:
        folder = self.root / f"L{block.line}"
        folder.mkdir()
        inputs, names = (lm, LM_FILES) if lm else (self.inputs, FILES)
        for name in names:
            source = inputs / name
            if source.is_dir():
                shutil.copytree(source, folder / name)
            else:
                (folder / name).symlink_to(source)
        return folder

    def args(self, entry: Entry) -> list[str]:
        text = entry.text
        if entry.synopsis:
            text = re.sub(r"[\[\]]", "", re.sub(r"(\w+)(\|[\w:]+)+", r"\1", text))
        args = [a for w in shlex.split(text) for a in _replace(w, entry, self.port)]
        for start, extra in FAST.items():
            if entry.text.startswith(start):
                args += shlex.split(extra)
        return args

    def run(self, entry: Entry, folder: Path) -> Result:
        args = self.args(entry)
        if args[0] == "edgeml":
            with self.monkeypatch.context() as m:
                m.chdir(folder)
                r = CliRunner().invoke(_cli(), args[1:], catch_exceptions=False)
            return Result(r.exit_code, r.stdout, r.stderr, args, folder)
        command = [sys.executable, *args[1:]] if args[0] == "python" else args
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
        return Result(done.returncode, done.stdout, done.stderr, args, folder)


def _replace(word: str, entry: Entry, port: int | None) -> list[str]:
    if word == "...":
        start = next((s for s in FAST if entry.text.startswith(s) and "..." in s), None)
        return shlex.split(WORDS["..."]) if start is None else []
    if entry.word == "curl":
        word = word.replace(URL[0], URL[1].format(port=port))
        if word.startswith('{"inputs"'):
            return [json.dumps({"inputs": {"input": shown_digit(word).tolist()}})]
    return [METAVARS.get(word, WORDS.get(word, word))]


def _cli():
    from edgeml.cli import cli

    return cli


def shown_digit(body: str) -> np.ndarray:
    """The sample the README's JSON request shows the start of: scikit-learn's first digit, scaled as the example
    was trained (pixels / 16); the values shown must be its first row."""
    from sklearn.datasets import load_digits

    from edgeml.examples import PREPROCESS

    image = (load_digits().images[:1, None] * PREPROCESS.scale).astype(np.float32)
    shown = [float(v) for v in re.search(r"\[\[\[\[([^\]]*?)(?:, \.\.\.)?\]", body).group(1).split(",")]
    assert shown == image[0, 0, 0].tolist(), f"README shows {shown}, the digit's first row is {image[0, 0, 0]}"
    return image


@pytest.fixture(scope="module")
def workspace(demo_run, files, digits, tmp_path_factory):
    """The placeholder files, made from the digits example: the ONNX and .pt2 models, their state_dict, the
    calibration, evaluation and (a slice of the) training data, a device profile of one's own, an input file,
    and OUT, the example's optimize run."""
    inputs = tmp_path_factory.mktemp("readme-inputs")
    for name, source in (("model.onnx", "digits.onnx"), ("model.pt2", "digits.pt2"), ("calib.npz", "calib.npz"),
                         ("eval.npz", "eval.npz"), ("sd.pt", "weights.pt")):
        shutil.copy(files[source], inputs / name)
    np.savez(inputs / "train.npz", input=digits.train.inputs["input"][:256], labels=digits.train.labels[:256])
    np.savez(inputs / "input.npz", input=digits.test.inputs["input"][:4])
    shutil.copy(ROOT / "profiles" / "jetson-orin-nano.yaml", inputs / "my-board.yaml")
    shutil.copytree(demo_run[1], inputs / "OUT")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)      # `--track mlflow` logs to ./mlruns
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
        yield Workspace(tmp_path_factory.mktemp("readme"), inputs, monkeypatch)


@pytest.fixture(scope="module")
def readme_lm_run(workspace, tiny_lm, tmp_path_factory) -> tuple[Path, Result]:
    """The language-model blocks' placeholders, made from the tiny LM (conftest.tiny_lm): the GGUF file written from
    it, a copy of its Hugging Face folder, docs/ and notes/ (evaluation and calibration text: topics of the Python
    language reference, one .txt document each, different ones), and OUT, LM_LINE's run (with its FAST settings),
    which the blocks share: (the folder of these, LM_LINE's Result)."""
    from pydoc_data.topics import topics

    from edgeml.targets.gguf_file import write_gguf

    inputs = tmp_path_factory.mktemp("readme-lm-inputs")
    write_gguf(tiny_lm, inputs / GGUF)
    shutil.copytree(tiny_lm, inputs / "my-llama")
    names = sorted(n for n in topics if len(topics[n]) > 2000)
    for folder, half in (("docs", names[1::2][:8]), ("notes", names[0::2][:8])):
        (inputs / folder).mkdir()
        for name in half:
            (inputs / folder / f"{name}.txt").write_text(topics[name])
    (entry,) = [e for b in BLOCKS for e in b.entries if e.text == LM_LINE]
    result = workspace.run(entry, inputs)
    assert result.exit_code == 0, f"README.md:{entry.line}: {result.args}: {result.stderr}"
    shutil.copytree(_written(result), inputs / "OUT")
    return inputs, result


def _serve(bundle: Path):
    """`edgeml serve BUNDLE --port P --threads 1` on a free loopback port, once /health answers."""
    port = free_port()
    process = edgeml_serve(bundle, port)
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not answer /health within 60 s"
            try:
                if Client(port).request("GET", "/health", headers={})[0] == 200:
                    return port, process
            except OSError:
                time.sleep(0.1)
    except BaseException:
        stop(process)
        raise


# ---------------------------------------------------------------------------------------------------------------
# What the README says each command prints or writes


def _report(out: Path) -> dict:
    for name in ("bundle/manifest.json", "recipe.yaml", "report.json", "report.md"):
        assert (out / name).is_file(), f"{out / name} is missing"
    return json.loads((out / "report.json").read_text())


def _option(args: list[str], *names: str) -> str:
    """The option's value (the last one given, as click takes it)."""
    return [args[i + 1] for i, a in enumerate(args) if a in names][-1]


def check_optimize(entry: Entry, r: Result) -> None:
    report = _report(r.folder / _option(r.args, "-o", "--out"))
    assert r.stdout.rstrip().endswith("(bundle/, recipe.yaml, report.json, report.md)")
    rows = [row["name"] for row in report["rows"]]
    if "--prune" in r.args:                        # pruned, then distilled: each a PyTorch stage row with MACs
        assert {"pruned-50", "pruned-50+distilled"} <= set(rows), rows
        assert "MACs" in (r.folder / _option(r.args, "-o") / "report.md").read_text()
    if "--target" in r.args and _option(r.args, "--target") == "jetson" and "--track" not in r.args:
        check_jetson_bundle(r.folder / _option(r.args, "-o"), _option(r.args, "--profile"))


def check_jetson_bundle(out: Path, profile: str) -> None:
    """The Jetson listing's files, in a bundle that optimize made for a Jetson on this machine."""
    report = _report(out)
    assert report["profile"]["name"] == Path(profile).stem, report["profile"]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["candidate"].startswith("tensorrt-"), manifest["candidate"]
    shown = {word for line in listing("OUT/bundle/model.onnx").lines for word in line.split()
             if word.startswith("OUT/bundle/")}
    expected = {f"OUT/bundle/{p.name}" for p in (out / "bundle").iterdir()} - {"OUT/bundle/manifest.json",
                                                                                "OUT/bundle/run.py"}
    assert expected <= shown, expected - shown
    assert ("OUT/bundle/calibration.cache" in expected) == (manifest["candidate"] == "tensorrt-int8-dla")
    script = (out / "bundle" / "build_engine.sh").read_text()
    assert "trtexec" in script and ("--fp16" if manifest["precision"] == "fp16" else "--int8") in script


def _written(r: Result) -> Path:
    """The OUT an optimize run says it wrote."""
    return r.folder / re.search(r"^Wrote (.+)/ \(", r.stdout, re.M).group(1)


def check_lm_optimize(entry: Entry, r: Result) -> None:
    """OUT as the README describes it: report.md (the table), report.json and recipe.yaml, and a bundle of the
    runtime's model folder (with its tokenizer; `run.py --chat` uses its chat template), manifest.json (kind
    language-model, the selected build), reference.json (four prompts with the build's answers) and run.py; the
    builds of the precision asked (every cpu build of it, an opt-in runtime's too: unavailable when not installed)."""
    from edgeml.targets import get_target

    out = _written(r)
    report = _report(out)
    assert "| build | runtime | weights |" in (out / "report.md").read_text()
    assert report["source"]["format"] == ("gguf" if r.args[2].endswith(".gguf") else "hf-folder"), report["source"]
    builds = [row for row in report["rows"] if row["role"] == "candidate"]
    precision = _option(r.args, "--precision")
    assert {row["precision"] for row in builds} == {precision}, r.args
    assert {row["name"] for row in builds} == {c.name for c in get_target("cpu").language_models
                                                if c.precision == precision}, builds
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["kind"] == "language-model" and manifest["build"] == report["selection"]["candidate"]
    assert any("tokenizer" in p.name for p in (bundle / manifest["model"]).iterdir())
    reference = json.loads((bundle / "reference.json").read_text())
    assert len(reference["prompts"]) == len(reference["outputs"]) == 4
    assert "import edgeml" not in (bundle / "run.py").read_text()
    if "--eval-data" in r.args:                    # docs/ and notes/: a document per .txt file; the budget asked
        for role, folder in (("evaluation", "docs"), ("calibration", "notes")):
            assert report["data"][role]["documents"] == len(list((r.folder / folder).glob("*.txt"))), report["data"]
        assert report["selection"]["max_ppl_increase"] == float(_option(r.args, "--max-ppl-increase"))
    else:                                          # the defaults, which the run names
        assert any("no --calib-data or --eval-data given" in w for w in report["warnings"]), report["warnings"]


def check_run_chat(entry: Entry, r: Result) -> None:
    assert r.stdout.strip(), r.stderr


def check_run_verify(entry: Entry, r: Result) -> None:
    assert r.stdout.startswith("4/4 reference answers reproduced token for token"), r.stdout


def check_verify_lm(entry: Entry, r: Result) -> None:
    assert "4/4 greedy answers reproduced" in r.stdout, r.stdout
    assert "verified: the files match the manifest and the outputs match the reference answers" in r.stdout


def _shown_json(text: str):
    """A JSON line the README shows with `…` for what varies: `{…, ` drops the fields before, a bare `…` is any."""
    return json.loads(re.sub(r"(?<=[:\[])…", '"…"', text.replace("{…,", "{")))


def _like(shown, got, any_text: bool = False) -> bool:
    """`got` has what `shown` shows: its fields, with their values (`"…"` any value, `"x…"` one starting with x;
    with any_text, any string for a string)."""
    if isinstance(shown, dict):
        return isinstance(got, dict) and all(k in got and _like(v, got[k], any_text) for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(got, list) and len(got) == len(shown) and all(_like(*p, any_text) for p in zip(shown, got))
    if isinstance(shown, str) and (any_text or "…" in shown):
        return shown == "…" or isinstance(got, str) and (any_text or got.startswith(shown.split("…")[0]))
    return shown == got


def check_chat_stream(entry: Entry, r: Result) -> None:
    """Server-sent events, each `data: ...` and a blank line: the chunks the README shows (the first with the role,
    `…` for one with content per piece of the answer, the last with the finish reason), then `data: [DONE]`. The
    tiny LM may run to max_tokens (finish reason `length`) where a real model stops."""
    events = r.stdout.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data: ") and "\n" not in e for e in events[:-1]), r.stdout
    assert events[-2] == "data: [DONE]" == entry.output[-1]
    first, content, ellipsis, last = entry.output[:-1]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert len(chunks) >= 3 and ellipsis == "…"
    assert _like(_shown_json(first.removeprefix("data: ")), chunks[0]), chunks[0]
    assert all(_like(_shown_json(content.removeprefix("data: ")), c, any_text=True) for c in chunks[1:-1])
    assert len({c["id"] for c in chunks}) == 1 and "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-1])
    shown_last = _shown_json(last.removeprefix("data: "))
    assert shown_last["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["finish_reason"] in (
        "stop", "length"), chunks[-1]
    shown_last["choices"][0]["finish_reason"] = chunks[-1]["choices"][0]["finish_reason"]
    assert _like(shown_last, chunks[-1]), chunks[-1]


def check_profiles_list(entry: Entry, r: Result) -> None:
    from edgeml.profiles import list_profiles

    names = []
    for item in entry.comment.split(","):          # `nvidia-t4/l4/h100` is nvidia-t4, nvidia-l4, nvidia-h100
        first, *more = item.strip().split("/")
        names += [first, *(first.rsplit("-", 1)[0] + "-" + m for m in more)]
    assert sorted(names) == sorted(p.name for p in list_profiles())
    assert all(name in r.stdout for name in names)


def check_profiles_show(entry: Entry, r: Result) -> None:
    assert r.stdout.startswith("# ")
    assert yaml.safe_load(r.stdout)["target"] == "jetson"


def check_run_check(entry: Entry, r: Result) -> None:
    assert "exit 0 when every output is within tolerance" in entry.comment


def check_run_inputs(entry: Entry, r: Result) -> None:
    manifest = json.loads((r.folder / "OUT/bundle/manifest.json").read_text())
    with np.load(r.folder / "out.npz") as out:
        assert sorted(out.files) == sorted(o["name"] for o in manifest["outputs"])
        assert all(len(out[name]) == 4 for name in out.files)           # input.npz holds 4 samples


def check_pack(entry: Entry, r: Result) -> None:
    """`the same bundle always gives the same bytes`: packed again, to another name."""
    again = CliRunner().invoke(_cli(), ["pack", str(r.folder / "OUT/bundle"), "-o", str(r.folder / "again.tar.gz")])
    assert again.exit_code == 0, again.stderr
    assert _sha256(r.folder / "model.edgeml.tar.gz") == _sha256(r.folder / "again.tar.gz")


def check_verify(entry: Entry, r: Result) -> None:
    assert "verified: the files match the manifest" in r.stdout
    assert entry.comment == "or a bundle folder"
    folder = CliRunner().invoke(_cli(), ["verify", str(r.folder / "OUT/bundle")])
    assert folder.exit_code == 0 and "verified: the files match the manifest" in folder.stdout, folder.stderr


def check_ship(entry: Entry, r: Result) -> None:
    assert (r.folder / "some/folder/bundle/manifest.json").is_file()
    files = len(list((r.folder / "OUT/bundle").iterdir()))
    assert re.search(r"^sent: .*manifest\.json", r.stdout, re.M) and f"verified: {files} files" in r.stdout


def check_profile(entry: Entry, r: Result) -> None:
    report = json.loads((r.folder / "device_report.json").read_text())
    manifest = json.loads((r.folder / "some/folder/bundle/manifest.json").read_text())
    assert report["bundle"]["candidate"] == manifest["candidate"] and report["latency"]["p50_ms"] > 0


def check_merge(entry: Entry, r: Result) -> None:
    assert "Measured on the device" in r.stdout


def check_tracked(entry: Entry, r: Result) -> None:
    """Logged to ./mlruns: one run with the target as a parameter and the bundle as an artifact."""
    runs = [p.parent for p in (r.folder / "mlruns").glob("*/*/meta.yaml") if (p.parent / "params").is_dir()]
    assert len(runs) == 1, runs
    assert (runs[0] / "params" / "target").read_text() == "jetson"


def check_predict_json(entry: Entry, r: Result) -> None:
    """The answer the README prints: the first values shown, within the bundle's reference tolerance; the input
    was scaled as the bundle's preprocessing says."""
    from edgeml.examples import PREPROCESS

    manifest = json.loads((r.folder / "OUT/bundle/manifest.json").read_text())
    assert manifest["preprocessing"]["scale"] == PREPROCESS.scale == 0.0625
    answer = json.loads(r.stdout)["outputs"]
    (shown,) = entry.output
    name = re.search(r'"outputs": \{"(\w+)"', shown).group(1)
    values = [float(v) for v in re.search(r"\[\[([^\]]*?), \.\.\.\]\]", shown).group(1).split(",")]
    got = np.array(answer[name][0], np.float32)
    tolerance = manifest["reference"]["tolerance"]
    assert np.abs(got[:len(values)] - values).max() <= 0.005 + tolerance * np.abs(got).max(), (values, got)
    assert got.argmax() == 0                       # the digit is a 0


def check_savez(entry: Entry, r: Result) -> None:
    with np.load(r.folder / "x.npz") as x:
        assert x["input"].shape == (4, 1, 8, 8)


def check_predict_npz(entry: Entry, r: Result) -> None:
    outputs = json.loads(r.stdout)["outputs"]
    assert [len(v) for v in outputs.values()] == [4]


def check_health(entry: Entry, r: Result) -> None:
    """Every field the comment shows, with its value."""
    shown = json.loads(re.sub(r",\s*\.\.\.", "", entry.comment))
    answer = json.loads(r.stdout)
    assert {k: answer.get(k) for k in shown} == shown, answer
    assert answer["drift"] is False


def check_metrics(entry: Entry, r: Result) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert entry.comment == "Prometheus text format"
    names = {f.name for f in text_string_to_metric_families(r.stdout)}
    assert {"edgeml_serve_requests", "edgeml_serve_predict_seconds", "edgeml_serve_drift"} <= names, names


def check_targets(entry: Entry, r: Result) -> None:
    from edgeml.targets import TARGETS

    names = entry.comment.split(":")[0].split(", ")
    assert names == list(TARGETS) and all(re.search(rf"^ *{name}: ", r.stdout, re.M) for name in names), r.stdout


def check_doctor(entry: Entry, r: Result) -> None:
    assert r.args[-2:] == ["--format", "table"] and r.stdout.strip()


CHECKS = {
    "edgeml optimize ": check_optimize,
    "edgeml profiles list": check_profiles_list,
    "edgeml profiles show ": check_profiles_show,
    "python OUT/bundle/run.py --check": check_run_check,
    "python OUT/bundle/run.py input.npz -o out.npz": check_run_inputs,
    "edgeml pack OUT/bundle -o model.edgeml.tar.gz": check_pack,
    "edgeml verify model.edgeml.tar.gz": check_verify,
    "edgeml ship OUT/bundle --to /some/folder": check_ship,
    "edgeml profile PATH/bundle ": check_profile,
    "edgeml report OUT --merge ": check_merge,
    "edgeml optimize ... --track mlflow": check_tracked,
    "curl -s localhost:8000/v1/predict -H 'Content-Type: application/json'": check_predict_json,
    "python -c \"import numpy as np; np.savez('x.npz'": check_savez,
    "curl -s localhost:8000/v1/predict -H 'Content-Type: application/x-npz'": check_predict_npz,
    "curl -s localhost:8000/health": check_health,
    "curl -s localhost:8000/metrics": check_metrics,
    "edgeml targets": check_targets,
    "edgeml doctor ": check_doctor,
    LM_LINE: check_lm_optimize,
    "edgeml optimize ./my-llama/ ": check_lm_optimize,
    'python OUT/bundle/run.py "Why is the sky blue?" --chat': check_run_chat,
    "python OUT/bundle/run.py --verify": check_run_verify,
    "edgeml verify OUT/bundle": check_verify_lm,
    "curl -N localhost:8000/v1/chat/completions ": check_chat_stream,
}
# the digits example's optimize run, done once for the session (conftest.demo_run) with its fast settings
DEMO_LINE = "edgeml optimize --example digits --target cpu"


def _check(entry: Entry):
    """The most specific check of a command line (the longest start it matches)."""
    starts = [s for s in CHECKS if entry.text.startswith(s) or entry.text == s.strip()]
    return CHECKS[max(starts, key=len)] if starts else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pip(entry: Entry) -> None:
    """Not run (it installs): the extras it names are pyproject.toml's, and torch is pinned as the Makefile pins it."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for word in shlex.split(entry.text)[2:]:
        if word.startswith("torch"):
            assert f"TORCH ?= {word}" in (ROOT / "Makefile").read_text(), word
        elif word != "-e":
            named = re.fullmatch(r"(?:\.|edgeml)\[([\w,]+)\]", word)
            assert named and set(named.group(1).split(",")) <= set(extras), word


# ---------------------------------------------------------------------------------------------------------------
# The tests


def test_every_block_is_read_and_every_command_is_handled():
    """A new block, command word or command line fails here until this file knows how to run or check it."""
    kinds = {b.kind for b in BLOCKS}
    assert kinds <= {"commands", "synopsis", "listing", "python", "yaml"}, kinds
    lines = [e for b in BLOCKS for e in b.entries if e.runs]
    for entry in lines:
        handled = entry.word == "pip" or _skip(entry) or entry.text == DEMO_LINE or _check(entry)
        assert handled, f"README.md:{entry.line}: nothing runs or checks `{entry.text}`"
    for start in (*SKIP, *FAST, *RUN_SYNOPSIS, *CHECKS):           # no entry is stale
        assert any(e.text.startswith(start) or e.text == start.strip() for e in lines), start
    assert sorted(b.lines[0].split()[0] for b in BLOCKS if b.kind == "listing") == sorted(LISTINGS)
    assert [b.kind for b in BLOCKS].count("python") == 1


def _skip(entry: Entry) -> str | None:
    return next((why for start, why in SKIP.items() if entry.text.startswith(start.strip())), None)


@pytest.mark.parametrize("block", blocks("commands"))
def test_commands(block, workspace, demo_run, request):
    """Each command line of the block, in order, in the block's folder; each must exit 0 and print or write
    what the README says."""
    lm = request.getfixturevalue("readme_lm_run") if block.language_model else None
    folder, skipped, server = workspace.folder(block, lm and lm[0]), [], None
    try:
        for entry in (e for e in block.entries if e.runs):
            if entry.word == "pip":
                _pip(entry)
            elif why := _skip(entry):
                skipped.append(f"README.md:{entry.line} `{entry.text}`: {why}")
            elif entry.text == DEMO_LINE:
                assert demo_run[3][:4] == tuple(shlex.split(entry.text)[2:])
                _report(demo_run[1])
            elif entry.text == LM_LINE:                # run once for the language-model blocks (readme_lm_run)
                check_lm_optimize(entry, lm[1])
            else:
                if entry.word == "curl" and server is None:
                    workspace.port, server = _serve(folder / "OUT/bundle")
                result = workspace.run(entry, folder)
                assert result.exit_code == 0, f"README.md:{entry.line}: {result.args}: {result.stderr}"
                check = _check(entry)
                if check:
                    check(entry, result)
    finally:
        if server is not None:
            stop(server)
    if skipped and len(skipped) == len([e for e in block.entries if e.runs]):
        pytest.skip("; ".join(skipped))


def test_python_snippet(workspace, capsys):
    """The Python API example runs as written (plus the fast timing settings) and prints the selected row."""
    (block,) = [b for b in BLOCKS if b.kind == "python"]
    code = "\n".join(block.lines)
    assert code.count('out="out")') == 1
    folder = workspace.folder(block)
    with workspace.monkeypatch.context() as m:
        m.chdir(folder)
        exec(compile(code.replace('out="out")', 'out="out", threads=1, measure_seconds=0.05)'), "README.md", "exec"),
             {})
    name, p50 = capsys.readouterr().out.split()
    report = _report(folder / "out")
    assert name == report["selection"]["candidate"] and float(p50) > 0


def test_recipe_block_is_a_recipe_with_every_key(workspace):
    """The recipe YAML loads as a recipe, and names every setting an optimize run's recipe.yaml holds."""
    from edgeml.pipeline.recipe import load_recipe, make_recipe

    (block,) = [b for b in BLOCKS if b.kind == "yaml" and b.lines[0].startswith("target:")]
    path = workspace.root / "r.yaml"
    path.write_text("\n".join(block.lines))
    recipe = make_recipe(**load_recipe(path))
    assert (recipe.target, recipe.prune.ratio, recipe.tuning_budget, recipe.threads) == ("cpu", 0.5, 300, 2)
    written = yaml.safe_load((workspace.inputs / "OUT/recipe.yaml").read_text())
    assert set(written) == set(yaml.safe_load(path.read_text())), set(written) ^ set(yaml.safe_load(path.read_text()))


def test_sweep_block_is_the_example_sweep(tmp_path):
    from edgeml.sweep.spec import load_sweep

    (block,) = [b for b in BLOCKS if b.kind == "yaml" and b.lines[0].startswith("models:")]
    example = ROOT / "examples" / "sweep.yaml"
    assert "\n".join(block.lines) + "\n" == example.read_text()
    assert len(load_sweep(example).cells) == 4                 # "is 4 cells"


def test_fleet_block_is_the_example_fleet():
    """tests/deploy/test_rollout.py checks the fleet block: the example file as it is, loaded."""
    (block,) = [b for b in BLOCKS if b.kind == "yaml" and b.lines[0].startswith("devices:")]
    assert "(examples/fleet.yaml)" in "".join(README.read_text().splitlines()[block.line - 4:block.line - 1])


def test_extras_table_is_pyprojects():
    """The Install section's table of extras: each row is an extra of pyproject.toml, `all` is every row above it,
    and the `llm` row names the packages its extra adds (`(and `cpu`)`: with the cpu extra's)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    section = README.read_text().split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([\w-]+)` \| ([^|]*?) \|", section, re.M))
    assert set(rows) <= set(extras), set(rows) - set(extras)
    above = list(rows)[:list(rows).index("all")]
    assert extras["all"] == [f"edgeml[{','.join(above)}]"], (extras["all"], above)
    adds = rows["llm"]
    assert adds.endswith(" (and `cpu`)") == ("edgeml[cpu]" in extras["llm"]), adds
    names = {re.match(r"[\w.-]+", r).group() for r in extras["llm"] if not r.startswith("edgeml[")}
    assert set(adds.removesuffix(" (and `cpu`)").split(", ")) == names, (adds, names)


def check_out_listing(block: Block, demo_run) -> None:
    """OUT's files, and the columns of report.md's candidate table."""
    out = demo_run[1]
    names = [line.split()[0] for line in block.lines if line.startswith("OUT/")]
    assert names == ["OUT/bundle/", "OUT/recipe.yaml", "OUT/report.json", "OUT/report.md"]
    assert sorted(p.name + "/" * p.is_dir() for p in out.iterdir()) == sorted(n[4:] for n in names)
    shown = " ".join(line.split(maxsplit=1)[1] if line.startswith("OUT/report.md") else line.strip()
                     for line in block.lines[block.lines.index(next(x for x in block.lines
                                                                    if x.startswith("OUT/report.md"))):])
    columns = [c.strip() for c in re.sub(r"\[[^\]]*\]", "", shown).split("|")]
    table = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| candidate |"))
    assert [c.strip() for c in table.strip("|").split("|")] == columns
    assert "--recipe OUT/recipe.yaml" in "\n".join(block.lines)


def check_bundle_listing(block: Block, demo_run) -> None:
    bundle = demo_run[1] / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert f"format {manifest['format_version']}" in block.lines[0]
    assert manifest["entry"] in block.lines[1]
    with np.load(bundle / "reference.npz") as reference:
        assert all(len(reference[n]) == 8 for n in reference.files if n.startswith("input"))
    assert "the first 8 evaluation inputs" in block.lines[2]
    assert "no edgeml" in block.lines[3] and "import edgeml" not in (bundle / "run.py").read_text()


def check_layout(block: Block, demo_run) -> None:
    """Every folder and file the layout names is there (outside its parenthesised remarks)."""
    top = sub = None
    depth = 0
    for raw in block.lines:
        kept = ""
        for c in raw:
            depth += (c == "(") - (c == ")")
            kept += c if depth == 0 and c != ")" else " "
        indent, words = len(raw) - len(raw.lstrip()), kept.split()
        if not words:
            continue
        if indent == 0:
            top, sub, rest = ROOT / words[0], None, words[1:]
        elif indent == 2 or words[0].endswith("/"):
            sub, rest = top / words[0], words[1:]
        else:
            rest = words
        here = sub or top
        assert here.exists(), f"{here} is in README's layout but not in the tree"
        for word in rest:
            name = word.strip("(),;:`")
            if re.fullmatch(r"\w+\.(py|json)", name):
                assert list(here.rglob(name)), f"README's layout names {name} in {here.relative_to(ROOT)}"
            elif re.fullmatch(r"\w+/", name) and here.name == "tests":
                assert (here / name).is_dir(), name


LISTINGS = {
    "OUT/bundle/": check_out_listing,
    "OUT/bundle/model.onnx": "checked by test_commands after the Jetson runs (check_jetson_bundle)",
    "OUT/bundle/manifest.json": check_bundle_listing,
    "DEST/releases/<id>/": "a device's releases after `edgeml rollout`: tests/deploy/test_rollout.py",
    "pyproject.toml": check_layout,
}


@pytest.mark.parametrize("block", blocks("listing"))
def test_listing(block, demo_run):
    check = LISTINGS[block.lines[0].split()[0]]
    if isinstance(check, str):
        assert "test" in check
        return
    check(block, demo_run)


# ---------------------------------------------------------------------------------------------------------------
# --help against the synopses


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def _usage(path: tuple[str, ...]) -> list[Entry]:
    """The README's lines of `edgeml PATH` in the blocks that show its synopsis; without one, every line of it."""
    def of(block):
        return [e for e in block.entries if e.text.split()[:len(path) + 1] == ["edgeml", *path]]
    synopses = [b for b in BLOCKS if any(e.synopsis for e in of(b))]
    return [e for b in synopses or BLOCKS for e in of(b)]


def _stated_default(param: click.Parameter) -> str | None:
    """The default --help states: click's, else the help text's `[default: X]` or `[default: X = ...]` (a value,
    not a phrase such as `all logical cores`)."""
    default = param.to_info_dict()["default"]
    if default is not None and not getattr(param, "is_flag", False) and not param.multiple:
        return str(default)
    stated = re.search(r"\[default: ([^\s\]]+)( = [^\]]*)?\]", getattr(param, "help", None) or "")
    return stated.group(1) if stated else None


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _metavar(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_:|,./@=\[\]-]*", value))


OPTION = re.compile(r"(?:^|(?<=[\s\[/|]))(--?[A-Za-z][\w-]*)")
VALUE = re.compile(r"(?:^|(?<=[\s\[/|]))(--?[A-Za-z][\w-]*) ([^\s\[\]-][^\s\[\]]*)")


@pytest.mark.parametrize("path, command", [pytest.param(p, c, id=" ".join(p)) for p, c in _commands(_cli())])
def test_help_agrees_with_the_readme(path, command):
    """Every option of the command is in its README synopsis and every option there is the command's; a choice
    list shows all the command's choices, its first the default; `[--opt VALUE]` shows the default --help states
    (VALUE not a METAVAR)."""
    usage = _usage(path)
    assert usage, f"`edgeml {' '.join(path)}` is in no block of README.md"
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    by_flag = {flag: p for p in options.values() for flag in (*p.opts, *p.secondary_opts)}
    shown = {flag for e in usage for flag in OPTION.findall(_unquoted(e.text))}
    assert shown <= set(by_flag), f"README shows options that `edgeml {' '.join(path)}` lacks: {shown - set(by_flag)}"
    missing = [p.opts[-1] for p in options.values() if not shown & {*p.opts, *p.secondary_opts}]
    assert not missing, f"README's synopsis of `edgeml {' '.join(path)}` lacks {missing}"
    choices: dict[str, set[str]] = {}
    for entry in (e for e in usage if e.synopsis):
        text = _unquoted(entry.text)
        for match in VALUE.finditer(text):
            param, value = by_flag[match.group(1)], match.group(2)
            if getattr(param, "is_flag", False) or _metavar(value):
                continue
            default = _stated_default(param)
            alternatives = value.split("|")
            bracketed = text[:match.start()].count("[") > text[:match.start()].count("]")
            if isinstance(param.type, click.Choice):
                assert set(alternatives) <= set(param.type.choices), (match.group(0), param.type.choices)
                if len(alternatives) > 1:
                    choices.setdefault(param.name, set()).update(alternatives)
            if default is not None and (bracketed or len(alternatives) > 1):
                assert _same(alternatives[0], default), f"README: `{match.group(0)}`, --help: default {default}"
    for name, shown_choices in choices.items():
        assert shown_choices == set(options[name].type.choices), (name, options[name].type.choices)
    for param in options.values():                 # a default output folder --help names is the README's
        default = _stated_default(param)
        if default and default.startswith("edgeml-out/"):
            assert default.split("/")[-1] in README.read_text(), default
