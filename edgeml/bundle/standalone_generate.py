"""The run.py of a language-model bundle: generates with the bundle's runtime alone (no edgeml, no transformers),
and with --verify generates the reference prompts again and compares the tokens with the ones recorded at build.
OpenVINO's CPU settings are written into it from edgeml.runtimes.openvino_genai, so that it runs a build as it was
judged."""

from edgeml.runtimes.openvino_genai import device_properties

_RUN_PY = r'''#!/usr/bin/env python3
"""Generate with this bundle's language model.

    python run.py "Why is the sky blue?" --chat      # the prompt in the model's chat template, streamed
    python run.py "Once upon a time" --max-new-tokens 64
    python run.py --verify                           # greedy answers to reference.json's prompts, compared

Needs the bundle's runtime only: onnxruntime-genai, openvino-genai, or executorch, llama-cpp-python or
ai-edge-litert with tokenizers and jinja2 (see manifest.json "runtime").
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPENVINO_CPU = OPENVINO_PROPERTIES   # the CPU plugin's settings the build was judged with


class OrtGenai:
    def __init__(self, folder, threads):
        import onnxruntime_genai as og

        config = og.Config(str(folder))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.og, self.model = og, og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)

    def chat(self, text):
        return self.tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": text}]),
                                                  add_generation_prompt=True)

    def encode(self, text):
        return [int(t) for t in self.tokenizer.encode(text)]

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def generate(self, ids, max_new_tokens):
        import numpy as np

        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])


class OpenvinoGenai:
    def __init__(self, folder, threads):
        import openvino_genai as ov_genai

        options = dict(OPENVINO_CPU)
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        self.genai = ov_genai
        self.pipeline = ov_genai.LLMPipeline(str(folder), "CPU", **options)
        self.tokenizer = self.pipeline.get_tokenizer()

    def chat(self, text):
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)

    def encode(self, text):
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def generate(self, ids, max_new_tokens):
        import threading
        import queue

        import numpy as np
        import openvino as ov

        tokens, done = queue.Queue(), object()

        def streamer(token):
            tokens.put(int(token))
            return self.genai.StreamingStatus.RUNNING

        def work():
            try:
                inputs = self.genai.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)),
                                                    ov.Tensor(np.ones((1, len(ids)), dtype=np.int64)))
                config = self.pipeline.get_generation_config()
                config.max_new_tokens, config.do_sample = max_new_tokens, False
                self.pipeline.generate(inputs, config, streamer=streamer)
            finally:
                tokens.put(done)

        threading.Thread(target=work, daemon=True).start()
        while (token := tokens.get()) is not done:
            yield token


class TokenizerFiles:
    """The tokenizer by `tokenizers` (tokenizer.json), the chat template by jinja2, for a runtime with neither."""

    def __init__(self, folder):
        from tokenizers import Tokenizer

        self.folder, self.tokenizer = folder, Tokenizer.from_file(str(folder / "tokenizer.json"))

    def chat(self, text):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        config = json.loads((self.folder / "tokenizer_config.json").read_text())
        file = self.folder / "chat_template.jinja"
        template = file.read_text() if file.is_file() else config.get("chat_template")
        if not template:
            return text
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                    extensions=["jinja2.ext.loopcontrols"])
        special = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
        return environment.from_string(template).render(messages=[{"role": "user", "content": text}],
                                                        add_generation_prompt=True, **special)

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class Executorch(TokenizerFiles):
    """The .pte program (its KV cache inside) with ExecuTorch's runtime."""

    def __init__(self, folder, threads):
        super().__init__(folder)
        program = _without_stderr(lambda: self._load(folder, threads))
        self.forward = _without_stderr(lambda: program.load_method("forward"))
        self.max_length = int(program.load_method("get_max_seq_len").execute([])[0])
        eos = program.load_method("get_eos_ids").execute([]) if "get_eos_ids" in program.method_names else []
        self.eos = {int(t) for t in eos}

    @staticmethod
    def _load(folder, threads):
        import executorch.kernels.quantized  # noqa: F401  (loading these registers the kernels of ops XNNPACK
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  does not run)
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads:
            portable_lib._unsafe_reset_threadpool(threads)
        return Runtime.get().load_program(str(folder / "model.pte"))

    def generate(self, ids, max_new_tokens):
        import torch

        logits = self.forward.execute([torch.tensor([ids]), torch.arange(len(ids))])[0]
        for position in range(len(ids), min(len(ids) + max_new_tokens, self.max_length)):
            token = int(logits[0, -1].argmax())
            yield token
            if token in self.eos:
                return
            logits = self.forward.execute([torch.tensor([[token]]), torch.tensor([position])])[0]


class LlamaCpp(TokenizerFiles):
    """The GGUF file with llama.cpp (llama-cpp-python), its KV cache as long as llama_cpp.json says. A llama.cpp
    built with AMX loads it without its extra buffer types, as edgeml judged it: their AMX matrix product crashes
    (llama.cpp issue 20824)."""

    def __init__(self, folder, threads):
        import llama_cpp.llama_cpp as api
        from llama_cpp import Llama

        super().__init__(folder)
        n_ctx = json.loads((folder / "llama_cpp.json").read_text())["n_ctx"]
        default = api.llama_model_default_params
        if b"AMX_INT8 = 1" in api.llama_print_system_info():
            def without_extra_buffers():
                params = default()
                params.use_extra_bufts = False
                return params
            api.llama_model_default_params = without_extra_buffers
        try:
            self.model = Llama(str(folder / "model.gguf"), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512),
                               n_threads=threads or None, n_threads_batch=threads or None, verbose=False)
        finally:
            api.llama_model_default_params = default
        manifest = json.loads((folder.parent / "manifest.json").read_text())
        self.eos = set(manifest["generation"]["eos_token_ids"])

    def generate(self, ids, max_new_tokens):
        import llama_cpp
        import numpy as np

        model = self.model
        model.reset()
        model.eval(list(ids))
        for position in range(len(ids), min(len(ids) + max_new_tokens, model.n_ctx())):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(model.n_vocab(),))
            token = int(logits.argmax())
            yield token
            if token in self.eos:
                return
            model.eval([token])


class Litert(TokenizerFiles):
    """The .tflite of litert-torch's exporter with ai-edge-litert's CompiledModel: its prefill_<n> and decode
    signatures take the KV cache and give it back, here in one set of buffers updated in place."""

    def __init__(self, folder, threads):
        import atexit
        import os

        super().__init__(folder)
        manifest = json.loads((folder.parent / "manifest.json").read_text())
        self.eos = set(manifest["generation"]["eos_token_ids"])
        # LiteRT logs at INFO level on stderr as it loads, as it first writes a buffer, and as it tears down: the
        # model is kept until exit (the last atexit call holds it), after stderr is closed
        _without_stderr(lambda: self._open(folder, threads))
        atexit.register(lambda: os.dup2(os.open(os.devnull, os.O_WRONLY), 2))
        atexit.register(lambda: self)

    def _open(self, folder, threads):
        import re

        import numpy as np
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        cpu = CpuOptions(num_threads=threads) if threads else CpuOptions()
        self.model = CompiledModel.from_file(str(folder / "model.tflite"), options=Options(
            hardware_accelerators=HardwareAccelerator.CPU, cpu_options=cpu))
        signatures = self.model.get_signature_list()
        self.prefills = sorted((int(m.group(1)), name) for name in signatures
                               if (m := re.fullmatch(r"prefill_(\d+)", name)))
        details = self.model.get_input_tensor_details("decode")
        self.max_length = int(details["mask"]["shape"][-1])
        self.vocab = int(np.prod(self.model.get_output_tensor_details("decode")["logits"]["shape"]))
        self.cache = {name: self.model.create_input_buffer_by_name("decode", name)
                      for name in signatures["decode"]["inputs"] if name.startswith("kv_cache_")}
        for name, buffer in self.cache.items():     # new buffers may hold any bytes: a NaN makes attention NaN
            buffer.write(np.zeros(details[name]["shape"], details[name]["dtype"]))
        self.inputs = {s: {n: self.model.create_input_buffer_by_name(s, n)
                           for n in signatures[s]["inputs"] if n not in self.cache} for s in signatures}
        self.outputs = {s: {n: self.model.create_output_buffer_by_name(s, n)
                            for n in signatures[s]["outputs"] if n not in self.cache} for s in signatures}

    def _run(self, signature, tokens, start):
        import numpy as np

        positions = np.arange(start, start + tokens.shape[1], dtype=np.int32)
        mask = np.where(np.arange(self.max_length)[None, :] <= positions[:, None], np.float32(0), np.float32(-1e9))
        inputs = self.inputs[signature]
        inputs["tokens"].write(tokens)
        inputs["input_pos"].write(positions)
        inputs["mask"].write(mask[None, None])
        self.model.run_by_name(signature, {**inputs, **self.cache}, {**self.outputs[signature], **self.cache})

    def _decode(self, token, position):
        import numpy as np

        self._run("decode", np.array([[token]], dtype=np.int32), position)
        return self.outputs["decode"]["logits"].read(self.vocab, np.float32)

    def generate(self, ids, max_new_tokens):
        import numpy as np

        start = 0
        while start < len(ids) - 1:              # the prompt but its last token, in prefill calls
            left = len(ids) - 1 - start
            fits = [(n, name) for n, name in self.prefills if start + n <= self.max_length]
            if not fits:
                self._decode(ids[start], start)
                start += 1
                continue
            n, name = next(((n, name) for n, name in fits if n >= left), fits[-1])
            tokens = np.zeros((1, n), dtype=np.int32)
            tokens[0, :min(n, left)] = ids[start:start + min(n, left)]
            self._run(name, tokens, start)
            start += min(n, left)
        logits = self._decode(ids[-1], len(ids) - 1)
        for position in range(len(ids), min(len(ids) + max_new_tokens, self.max_length)):
            token = int(logits.argmax())
            yield token
            if token in self.eos:
                return
            logits = self._decode(token, position)


def _without_stderr(load):
    """load(), without the log lines that ExecuTorch's runtime and torchao print as they load."""
    import os

    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        return load()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


RUNTIMES = {"onnxruntime-genai": OrtGenai, "openvino-genai": OpenvinoGenai, "executorch": Executorch,
            "llama-cpp": LlamaCpp, "litert": Litert}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?")
    parser.add_argument("--chat", action="store_true", help="put the prompt in the model's chat template")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: the runtime's default)")
    parser.add_argument("--verify", action="store_true", help="compare greedy answers with reference.json's")
    args = parser.parse_args()
    manifest = json.loads((HERE / "manifest.json").read_text())
    if manifest["runtime"] not in RUNTIMES:
        parser.exit(2, f"{manifest['runtime']} runs this model on the device: build its engine there with "
                       f"{manifest.get('device_build', 'its build script')} (see its comments)\n")
    model = RUNTIMES[manifest["runtime"]](HERE / manifest["model"], args.threads)
    if args.verify:
        reference = json.loads((HERE / "reference.json").read_text())
        same = 0
        for ids, expected in zip(reference["prompt_ids"], reference["output_ids"]):
            got = list(model.generate(ids, reference["max_new_tokens"]))[:len(expected)]
            same += got == expected
        total = len(reference["output_ids"])
        print(f"{same}/{total} reference answers reproduced token for token")
        sys.exit(0 if same == total else 1)
    if args.prompt is None:
        parser.error("give a PROMPT, or --verify")
    text = model.chat(args.prompt) if args.chat else args.prompt
    ids = model.encode(text)
    out = []
    shown = ""
    for token in model.generate(ids, args.max_new_tokens or manifest["generation"]["max_new_tokens"]):
        out.append(token)
        now = model.decode(out)
        if not now.endswith("\ufffd"):
            print(now[len(shown):], end="", flush=True)
            shown = now
    print()


if __name__ == "__main__":
    main()
'''

_OPENVINO = {k: v for k, v in device_properties(1).items() if k != "INFERENCE_NUM_THREADS"}
RUN_PY = _RUN_PY.replace("OPENVINO_PROPERTIES", repr(_OPENVINO))
