"""A tiny Llama-architecture causal LM with its own byte-level BPE tokenizer, trained for a few seconds on the
Python language reference that ships with CPython, saved as a Hugging Face folder: what every language-model test
optimizes, builds and serves (the real SmolLM2 runs in `make bench-llm`)."""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = 384
HIDDEN = 64                     # a multiple of 32 and 64: every INT4 block size divides it


def make_tiny_lm(folder: Path, *, steps: int = 120, seed: int = 0) -> Path:
    """Train and save the tiny LM (config.json, model.safetensors, tokenizer.json) into `folder`."""
    from pydoc_data.topics import topics

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    text = [topics[k] for k in sorted(topics)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer("\n".join(text))["input_ids"][:200_000])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=generator)
        batch = torch.stack([ids[s:s + 65] for s in starts])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    (folder / "trained.json").write_text(json.dumps({"steps": steps, "loss": float(loss.detach())}))
    return folder
