#!/usr/bin/python3
"""Writes a complete, deterministic Hugging Face model folder from a seed.

config.json, model.safetensors (or shards with model.safetensors.index.json), tokenizer.json
(byte-level BPE, Llama-3 style, trained here on corpus.txt), tokenizer_config.json with a chat
template, and generation_config.json. Only numpy is needed; the same seed gives the same bytes.

  make_model.py --out DIR [--preset demo|tiny|bench-0.5b] [--dtype bf16] [--seed 0] [...]
"""

import argparse
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

PRESETS = {
    # Small enough to build in a second and run anywhere; shaped like Llama (GQA, several layers).
    # vocab 0: exactly the tokenizer's size, so every id the demo samples decodes to text.
    "demo": dict(hidden=256, layers=4, heads=8, kv_heads=2, ffn=688, vocab=0),
    "tiny": dict(hidden=64, layers=3, heads=4, kv_heads=2, ffn=160, vocab=1024),
    # The benchmark model of docs/performance.md: about 0.5B parameters.
    "bench-0.5b": dict(hidden=1536, layers=16, heads=16, kv_heads=4, ffn=4096, vocab=32000),
}

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# The Llama 3 pre-tokenizer pattern (tokenizer.json "Split" regex).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Meta-Llama-3-8B-Instruct's chat_template.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train_bpe(text, num_merges):
    """Plain BPE over pre-tokenized words; ties broken by the pair's text, so it is deterministic."""
    byte_map = bytes_to_unicode()
    # An ASCII approximation of the Llama 3 split is enough to learn merges.
    words = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+|[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+", text)
    counts = {}
    for w in words:
        key = tuple(byte_map[b] for b in w.encode("utf-8"))
        counts[key] = counts.get(key, 0) + 1
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for word, c in counts.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged = best[0] + best[1]
        new_counts = {}
        for word, c in counts.items():
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_counts[tuple(out)] = new_counts.get(tuple(out), 0) + c
        counts = new_counts
    return merges


def make_tokenizer(vocab_limit):
    """tokenizer.json and tokenizer_config.json contents; vocabulary fits in vocab_limit ids."""
    byte_map = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[byte_map[b]] = len(vocab)
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8") as f:
        corpus = f.read()
    num_merges = max(0, min(vocab_limit, 1024) - 256 - len(SPECIAL_TOKENS) - 16)
    merges = train_bpe(corpus, num_merges)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added = []
    for tok in SPECIAL_TOKENS:
        added.append({"id": len(vocab), "content": tok, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        vocab[tok] = len(vocab)
    assert len(vocab) <= vocab_limit, (len(vocab), vocab_limit)
    bos, eos = SPECIAL_TOKENS[0], SPECIAL_TOKENS[4]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }
    config = {
        "bos_token": bos,
        "eos_token": eos,
        "add_bos_token": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return tokenizer, config, vocab[bos], [vocab[eos], vocab[SPECIAL_TOKENS[1]]]


def to_dtype(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "f32":
        return a, "F32"
    if dtype == "f16":
        return a.astype(np.float16), "F16"
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return u.astype(np.uint16), "BF16"


def write_safetensors(path, tensors):
    """tensors: list of (name, ndarray, dtype-name); written in name order."""
    header = {}
    offset = 0
    for name, arr, dt in sorted(tensors, key=lambda t: t[0]):
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name, arr, dt in sorted(tensors, key=lambda t: t[0]):
            f.write(arr.tobytes())


def build(args):
    rng = np.random.default_rng(args.seed)
    d, L, H, KV, F, V = args.hidden, args.layers, args.heads, args.kv_heads, args.ffn, args.vocab
    hd = args.head_dim or d // H
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM"}[args.arch]
    tok, tok_config, bos_id, eos_ids = make_tokenizer(V or 1024)
    if V == 0:
        V = len(tok["model"]["vocab"])  # added tokens are in the vocab too

    def normal(shape, std):
        return rng.standard_normal(size=shape, dtype=np.float32) * np.float32(std)

    tensors = []

    def add(name, arr):
        # Norms and biases are stored in the model dtype too, as real checkpoints do.
        tensors.append((name,) + to_dtype(arr, args.dtype))

    qkv_bias = args.arch == "qwen2" or args.attention_bias
    add("model.embed_tokens.weight", normal((V, d), 1.0))
    for l in range(L):
        p = f"model.layers.{l}."
        add(p + "input_layernorm.weight", 1.0 + normal((d,), 0.1))
        add(p + "post_attention_layernorm.weight", 1.0 + normal((d,), 0.1))
        add(p + "self_attn.q_proj.weight", normal((H * hd, d), d ** -0.5))
        add(p + "self_attn.k_proj.weight", normal((KV * hd, d), d ** -0.5))
        add(p + "self_attn.v_proj.weight", normal((KV * hd, d), d ** -0.5))
        add(p + "self_attn.o_proj.weight", normal((d, H * hd), (H * hd) ** -0.5))
        if qkv_bias:
            add(p + "self_attn.q_proj.bias", normal((H * hd,), 0.1))
            add(p + "self_attn.k_proj.bias", normal((KV * hd,), 0.1))
            add(p + "self_attn.v_proj.bias", normal((KV * hd,), 0.1))
        if args.attention_bias and args.arch == "llama":
            add(p + "self_attn.o_proj.bias", normal((d,), 0.1))
        add(p + "mlp.gate_proj.weight", normal((F, d), d ** -0.5))
        add(p + "mlp.up_proj.weight", normal((F, d), d ** -0.5))
        add(p + "mlp.down_proj.weight", normal((d, F), F ** -0.5))
    add("model.norm.weight", 1.0 + normal((d,), 0.1))
    if not args.tie:
        add("lm_head.weight", normal((V, d), d ** -0.5))

    config = {
        "architectures": [arch],
        "model_type": args.arch,
        "vocab_size": V,
        "hidden_size": d,
        "intermediate_size": F,
        "num_hidden_layers": L,
        "num_attention_heads": H,
        "num_key_value_heads": KV,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_pos,
        "rms_norm_eps": 1e-5,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": bool(args.tie),
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids,
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[args.dtype],
    }
    if args.arch == "llama":
        config["attention_bias"] = bool(args.attention_bias)
    if args.arch in ("mistral", "qwen2"):
        config["sliding_window"] = args.sliding_window or None
    if args.arch == "qwen2":
        config["use_sliding_window"] = bool(args.sliding_window)
        config["max_window_layers"] = args.max_window_layers if args.max_window_layers >= 0 else L
    if args.rope_scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": 2.0}
    elif args.rope_scaling == "llama3":
        config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 64}

    os.makedirs(args.out, exist_ok=True)
    for name in os.listdir(args.out):
        if name.startswith("model") and (name.endswith(".safetensors") or name.endswith(".json")):
            os.remove(os.path.join(args.out, name))
    if args.shards > 1:
        tensors.sort(key=lambda t: t[0])
        per = -(-len(tensors) // args.shards)
        weight_map = {}
        total = 0
        for s in range(args.shards):
            part = tensors[s * per:(s + 1) * per]
            fname = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
            write_safetensors(os.path.join(args.out, fname), part)
            for name, arr, _ in part:
                weight_map[name] = fname
                total += arr.nbytes
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    else:
        write_safetensors(os.path.join(args.out, "model.safetensors"), tensors)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos_id, "eos_token_id": eos_ids}, f, indent=2)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="bf16")
    ap.add_argument("--arch", choices=["llama", "mistral", "qwen2"], default="llama")
    for key in ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab"):
        ap.add_argument("--" + key.replace("_", "-"), dest=key, type=int)
    ap.add_argument("--head-dim", type=int, default=0)
    ap.add_argument("--tie", action="store_true", help="tie the LM head to the embedding")
    ap.add_argument("--attention-bias", action="store_true")
    ap.add_argument("--rope-scaling", choices=["none", "linear", "llama3"], default="none")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--max-pos", type=int, default=4096)
    ap.add_argument("--sliding-window", type=int, default=0)
    ap.add_argument("--max-window-layers", type=int, default=-1)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


if __name__ == "__main__":
    build(parse_args(sys.argv[1:]))
