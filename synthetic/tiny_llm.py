"""A tiny random LLaMA with an offline word-level tokenizer: the stand-in for Vicuna-7B where no LLM weights exist
(the demo, tests). It makes the GeoChat plumbing run end to end on CPU; it says nothing about answer quality."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ("<unk>", "<s>", "</s>")
CHAT_WORDS = ("USER", "ASSISTANT", ":", "?", ".", ",", "[grounding]", "[refer]", "[identify]", "<p>", "</p>")


def word_vocab(texts: Iterable[str], limit: int = 4000) -> list[str]:
    """Special tokens, chat words, then the most frequent words of ``texts`` (whitespace/punctuation split)."""
    from collections import Counter

    counts = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    words = [w for w, _ in counts.most_common(limit) if w not in SPECIAL and w not in CHAT_WORDS]
    return [*SPECIAL, *CHAT_WORDS, *words]


def write_tiny_llm(path: str | Path, words: list[str], hidden: int = 64, layers: int = 2, seed: int = 0,
                   head_scale: float = 25.0, heads: int = 4, intermediate: int | None = None,
                   vocab_size: int | None = None) -> Path:
    """``save_pretrained`` a random LlamaForCausalLM (``hidden`` wide, ``layers`` deep) + a WordLevel tokenizer.

    ``heads``/``intermediate``/``vocab_size`` give other shapes (Vicuna-7B: 4096, 32 layers, 32 heads, 11008,
    32000); rows past the tokenizer's words are never produced by it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate or 2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=max(vocab_size or 0, len(words)),
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=8192)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # a random 0.02-init head caps every logit near 1 after the final RMSNorm, so no LoRA on the body can make
        # a token likely; a trained LLM's head is sharp: scale it like one (fine-tuning keeps lm_head frozen)
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
