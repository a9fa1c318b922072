"""The tiny LM of tests/tiny_lm.py written as a GGUF file, in the layout llama.cpp's convert_hf_to_gguf.py writes for
the "llama" architecture: its metadata keys, its tensor names, attn_q / attn_k rows permuted for llama.cpp's rope, a
byte-level BPE ("gpt2") tokenizer with its merges and chat template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    """llama.cpp's name for a Llama tensor of a Hugging Face checkpoint."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{LAYER_TENSORS[module]}.{suffix}"


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from rotate-half pairs to interleaved pairs, as llama.cpp does for rope."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(hf_folder: Path, out_file: Path, *, q8_0: bool = False) -> Path:
    """Write the Llama model in `hf_folder` as a GGUF file: F32 tensors, or Q8_0 matrices and F32 norms."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((hf_folder / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    out_file.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(hf_folder.name)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_0 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, hf_folder, config)

    weights = load_file(str(hf_folder / "model.safetensors"))
    for hf_name in sorted(weights):
        data = weights[hf_name].astype(np.float32)
        name = gguf_name(hf_name)
        if ".attn_q." in name:
            data = permute(data, heads)
        elif ".attn_k." in name:
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


def _add_tokenizer(writer, hf_folder: Path, config: dict) -> None:
    """The byte-level BPE tokenizer as llama.cpp's gpt2 vocabulary: tokens in id order, types, merges, specials."""
    import gguf

    tokenizer = json.loads((hf_folder / "tokenizer.json").read_text())
    by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    by_id.update(special)
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
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_add_bos_token(False)
    template = hf_folder / "chat_template.jinja"
    chat_template = (template.read_text() if template.is_file() else
                     json.loads((hf_folder / "tokenizer_config.json").read_text()).get("chat_template"))
    if chat_template:
        writer.add_chat_template(chat_template)
