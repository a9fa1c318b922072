"""A Hugging Face causal LM written as a GGUF file, in the layout llama.cpp's convert_hf_to_gguf.py writes (the pip
package of llama.cpp does not carry that script): the architecture's metadata keys, llama.cpp's tensor names (gguf's
own map), attn_q / attn_k rows of the "llama" architecture permuted for llama.cpp's rope, and the tokenizer's
vocabulary in id order with its merges and chat template.

The tokens are written so that llama.cpp loads the file and its ids are the source tokenizer's; edgeml and the
bundle's run.py tokenize with tokenizer.json, never with llama.cpp's own tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeml.targets.base import BuildRefused

# Hugging Face architecture -> llama.cpp's; "llama" takes the rope on interleaved pairs, hence the permutation
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3"}


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from rotate-half pairs to interleaved pairs, as llama.cpp does for rope."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(hf_folder: Path, out_file: Path, *, q8_0: bool = False) -> Path:
    """Write the model in `hf_folder` as a GGUF file: F32 tensors, or (q8_0) its matrices in Q8_0 as a Q8_0 file
    from elsewhere holds them. BuildRefused for an architecture, rope scaling or tokenizer it cannot write."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((hf_folder / "config.json").read_text())
    arch = _arch(config)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    scaling = rope.get("rope_type", rope.get("type", "default"))
    if scaling != "default":
        raise BuildRefused(f"llama.cpp: rope scaling {scaling!r} is not written to GGUF here")
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    if window and window < config["max_position_embeddings"]:
        raise BuildRefused(f"llama.cpp: layers with sliding-window attention ({window} tokens) are not written to "
                           f"GGUF here")
    files = sorted(hf_folder.glob("*.safetensors"))
    if not files:
        raise BuildRefused("llama.cpp: the model folder has no .safetensors weights")
    out_file.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_name(hf_folder.name)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_0 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, hf_folder, config)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    for file in files:
        weights = load_file(str(file))
        for hf_name in sorted(weights):
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise BuildRefused(f"llama.cpp: no GGUF name for the tensor {hf_name} of {arch}")
            data = weights[hf_name].astype(np.float32)
            if arch == "llama" and ".attn_q." in name:
                data = permute(data, heads)
            elif arch == "llama" and ".attn_k." in name:
                data = permute(data, kv_heads)
            if q8_0 and data.ndim == 2:
                writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def _arch(config: dict) -> str:
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        raise BuildRefused(f"llama.cpp: {architecture} is not written to GGUF here (it writes "
                           f"{', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[architecture]


def _add_tokenizer(writer, hf_folder: Path, config: dict) -> None:
    """The tokenizer's vocabulary as llama.cpp's "gpt2" BPE vocabulary: tokens in id order, their types, merges,
    special ids and the chat template."""
    import gguf

    file = hf_folder / "tokenizer.json"
    tokenizer = json.loads(file.read_text()) if file.is_file() else {}
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE":
        raise BuildRefused(f"llama.cpp: a {model.get('type', 'missing')} tokenizer is not written to GGUF here "
                           f"(it writes BPE tokenizers from tokenizer.json)")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {t["id"]: t["content"] for t in tokenizer.get("added_tokens", []) if t["special"]}
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        if i in special:
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:                                               # llama.cpp pads the vocabulary to the model's size
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id)):
        value = config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            add(value)
    writer.add_add_bos_token(False)
    template = hf_folder / "chat_template.jinja"
    settings = hf_folder / "tokenizer_config.json"
    chat_template = (template.read_text() if template.is_file() else
                     json.loads(settings.read_text()).get("chat_template") if settings.is_file() else None)
    if chat_template:
        writer.add_chat_template(chat_template)
