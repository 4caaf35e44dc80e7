#!/usr/bin/python3
"""GGUF files in numpy, written from the format's documentation (ggml's docs/gguf.md and the
block layouts of ggml-common.h): a writer, a reader, quantizers for Q8_0, Q4_0, Q4_K, Q5_K and
Q6_K, and dequantizers. Independent of Switchyard's C++ reader and kernels, which the tests check
against it.

  gguf.py convert --model DIR --out FILE.gguf [--type q8_0|q4_0|q4_k|q5_k|q6_k|q4_k_m|f16|bf16|f32]
  gguf.py random-blocks --out FILE.gguf [--seed 0]    # every type, random bytes, for the reader test
  gguf.py dequantize FILE.gguf OUT.npz                 # every tensor in F32
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"
ALIGNMENT = 32
QK_K = 256

# Value types.
U8, I8, U16, I16, U32, I32, F32V, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32V: "<f",
                  BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}

# Tensor types: id, values per block, bytes per block.
TYPES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34),
         "q4_k": (12, 256, 144), "q5_k": (13, 256, 176), "q6_k": (14, 256, 210),
         "bf16": (30, 1, 2)}
TYPE_NAMES = {v[0]: k for k, v in TYPES.items()}


# ---------------------------------------------------------------------------------------------
# Quantizers: rows [n, cols] float32 -> uint8 [n, row_bytes].

def _f16(a):
    return np.asarray(a, dtype=np.float32).astype(np.float16)


def _blocks(x, size):
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.shape[-1] % size == 0, f"rows of {x.shape[-1]} are not whole blocks of {size}"
    return x.reshape(-1, size)


def _round_away(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def _inverse(d):
    return np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d != 0)


# Q8_0 and Q4_0 as llama.cpp's reference quantizers compute them (the reciprocal of the scale is
# taken before the scale is rounded to F16), which Switchyard's --quantization reproduces.
def quantize_q8_0(x):
    b = _blocks(x, 32)
    d = (np.abs(b).max(axis=1) / np.float32(127.0)).astype(np.float32)
    q = _round_away(b * _inverse(d)[:, None]).astype(np.int8)
    return np.concatenate([_f16(d).view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)


def quantize_q4_0(x):
    b = _blocks(x, 32)
    idx = np.abs(b).argmax(axis=1)
    d = (b[np.arange(len(b)), idx] / np.float32(-8.0)).astype(np.float32)
    q = np.minimum(15, np.trunc(b * _inverse(d)[:, None] + np.float32(8.5))).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    return np.concatenate([_f16(d).view(np.uint8).reshape(-1, 2), packed], axis=1)


def _pack_k_scales(sc, m):
    """sc, m: [n, 8] 6-bit values -> [n, 12] bytes (the inverse of the format's unpacking)."""
    s = np.zeros((len(sc), 12), np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return s


def _unpack_k_scales(s):
    s = s.astype(np.uint8)
    sc = np.zeros((len(s), 8), np.uint8)
    m = np.zeros((len(s), 8), np.uint8)
    sc[:, 0:4] = s[:, 0:4] & 63
    m[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, m


def _k_affine(b, levels):
    """Per 32-value sub-block affine quantization with 6-bit scales and mins under F16 super-block
    factors. Returns d, dmin (F16), sc, m ([n, 8] uint8) and q ([n, 8, 32])."""
    sub = b.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)
    hi = sub.max(axis=2)
    scale = (hi - lo) / levels
    mins = -lo
    d = _f16(scale.max(axis=1) / 63.0)
    dmin = _f16(mins.max(axis=1) / 63.0)
    df, dminf = d.astype(np.float32), dmin.astype(np.float32)
    sc = np.clip(np.rint(np.divide(scale, df[:, None], out=np.zeros_like(scale),
                                   where=df[:, None] != 0)), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(np.divide(mins, dminf[:, None], out=np.zeros_like(mins),
                                  where=dminf[:, None] != 0)), 0, 63).astype(np.uint8)
    eff_scale = df[:, None] * sc.astype(np.float32)
    eff_min = dminf[:, None] * m.astype(np.float32)
    q = np.divide(sub + eff_min[:, :, None], eff_scale[:, :, None], out=np.zeros_like(sub),
                  where=eff_scale[:, :, None] != 0)
    q = np.clip(np.rint(q), 0, levels).astype(np.uint8)
    return d, dmin, sc, m, q


def quantize_q4_k(x):
    b = _blocks(x, QK_K)
    d, dmin, sc, m, q = _k_affine(b, 15)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(-1, 128)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                           _pack_k_scales(sc, m), qs], axis=1)


def quantize_q5_k(x):
    b = _blocks(x, QK_K)
    d, dmin, sc, m, q = _k_affine(b, 31)
    low = q & 0xF
    qs = (low[:, 0::2, :] | (low[:, 1::2, :] << 4)).reshape(-1, 128)
    qh = np.zeros((len(b), 32), np.uint8)
    for s in range(8):
        qh |= ((q[:, s, :] >> 4) & 1) << s
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                           _pack_k_scales(sc, m), qh, qs], axis=1)


def quantize_q6_k(x):
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 16, 16)
    amax = np.abs(sub).max(axis=2)
    scale = amax / 31.0
    d = _f16(np.abs(scale).max(axis=1) / 127.0)
    df = d.astype(np.float32)
    sc = np.clip(np.rint(np.divide(scale, df[:, None], out=np.zeros_like(scale),
                                   where=df[:, None] != 0)), -128, 127).astype(np.int8)
    eff = df[:, None] * sc.astype(np.float32)
    q = np.divide(sub, eff[:, :, None], out=np.zeros_like(sub), where=eff[:, :, None] != 0)
    q = (np.clip(np.rint(q), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 128)
    ql = np.zeros((len(b), 2, 64), np.uint8)
    qh = np.zeros((len(b), 2, 32), np.uint8)
    for h in range(2):
        v = q[:, h, :]
        ql[:, h, :32] = (v[:, 0:32] & 0xF) | ((v[:, 64:96] & 0xF) << 4)
        ql[:, h, 32:] = (v[:, 32:64] & 0xF) | ((v[:, 96:128] & 0xF) << 4)
        qh[:, h, :] = ((v[:, 0:32] >> 4) | ((v[:, 32:64] >> 4) << 2) | ((v[:, 64:96] >> 4) << 4)
                       | ((v[:, 96:128] >> 4) << 6))
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8),
                           d.view(np.uint8).reshape(-1, 2)], axis=1)


QUANTIZERS = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0, "q4_k": quantize_q4_k,
              "q5_k": quantize_q5_k, "q6_k": quantize_q6_k}


# ---------------------------------------------------------------------------------------------
# Dequantizers: uint8 blocks [n, block_bytes] -> float32 [n, values], in F32 arithmetic.

def _half(raw):
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32).reshape(-1)


def dequantize_q8_0(b):
    d = _half(b[:, 0:2])
    return d[:, None] * b[:, 2:].view(np.int8).astype(np.float32)


def dequantize_q4_0(b):
    d = _half(b[:, 0:2])
    qs = b[:, 2:]
    q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.int32) - 8
    return q.astype(np.float32) * d[:, None]


def _k_scales(b):
    d, dmin = _half(b[:, 0:2]), _half(b[:, 2:4])
    sc, m = _unpack_k_scales(b[:, 4:16])
    return d[:, None] * sc.astype(np.float32), dmin[:, None] * m.astype(np.float32)


def dequantize_q4_k(b):
    scale, mins = _k_scales(b)
    qs = b[:, 16:144].reshape(-1, 4, 32)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    return (scale[:, :, None] * q - mins[:, :, None]).reshape(-1, QK_K)


def dequantize_q5_k(b):
    scale, mins = _k_scales(b)
    qh = b[:, 16:48]
    qs = b[:, 48:176].reshape(-1, 4, 32)
    low = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.int32)
    high = np.stack([(qh >> s) & 1 for s in range(8)], axis=1).astype(np.int32)
    q = (low + (high << 4)).astype(np.float32)
    return (scale[:, :, None] * q - mins[:, :, None]).reshape(-1, QK_K)


def dequantize_q6_k(b):
    ql = b[:, 0:128].reshape(-1, 2, 64).astype(np.int32)
    qh = b[:, 128:192].reshape(-1, 2, 32).astype(np.int32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 16)
    d = _half(b[:, 208:210])
    q = np.zeros((len(b), 2, 128), np.int32)
    q[:, :, 0:32] = (ql[:, :, 0:32] & 0xF) | ((qh & 3) << 4)
    q[:, :, 32:64] = (ql[:, :, 32:64] & 0xF) | (((qh >> 2) & 3) << 4)
    q[:, :, 64:96] = (ql[:, :, 0:32] >> 4) | (((qh >> 4) & 3) << 4)
    q[:, :, 96:128] = (ql[:, :, 32:64] >> 4) | (((qh >> 6) & 3) << 4)
    q = (q - 32).astype(np.float32).reshape(-1, 16, 16)
    return ((d[:, None] * sc)[:, :, None] * q).reshape(-1, QK_K)


DEQUANTIZERS = {"q8_0": dequantize_q8_0, "q4_0": dequantize_q4_0, "q4_k": dequantize_q4_k,
                "q5_k": dequantize_q5_k, "q6_k": dequantize_q6_k}


def encode(arr, type_name):
    """float32 [rows, cols] (or [n]) -> raw bytes of the tensor in `type_name`."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if type_name == "f32":
        return arr.tobytes()
    if type_name == "f16":
        return arr.astype(np.float16).tobytes()
    if type_name == "bf16":
        u = arr.view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
    return QUANTIZERS[type_name](arr.reshape(-1, arr.shape[-1])).tobytes()


def decode(raw, type_name, shape):
    """Raw tensor bytes -> float32 array of `shape` (outermost first)."""
    if type_name == "f32":
        return np.frombuffer(raw, np.float32).reshape(shape).copy()
    if type_name == "f16":
        return np.frombuffer(raw, np.float16).astype(np.float32).reshape(shape)
    if type_name == "bf16":
        u = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    _, values, nbytes = TYPES[type_name]
    blocks = np.frombuffer(raw, np.uint8).reshape(-1, nbytes)
    return DEQUANTIZERS[type_name](blocks).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Writer and reader.

def _string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v):
    if vtype == STRING:
        return _string(v)
    if vtype == ARRAY:
        etype, items = v
        out = struct.pack("<IQ", etype, len(items))
        return out + b"".join(_value(etype, x) for x in items)
    return struct.pack(SCALAR_FORMATS[vtype], v)


def write(path, metadata, tensors):
    """metadata: list of (key, type, value); arrays as (ARRAY, (element type, items)).
    tensors: list of (name, type name, shape outermost-first, raw bytes)."""
    out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, vtype, v in metadata:
        out += _string(key) + struct.pack("<I", vtype) + _value(vtype, v)
    offset = 0
    offsets = []
    for name, tname, shape, raw in tensors:
        out += _string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", n) for n in reversed(shape))  # innermost first
        out += struct.pack("<IQ", TYPES[tname][0], offset)
        offsets.append(offset)
        offset += len(raw)
        offset += -offset % ALIGNMENT
    out += b"\0" * (-len(out) % ALIGNMENT)
    for (name, tname, shape, raw), off in zip(tensors, offsets):
        out += raw
        out += b"\0" * (-len(out) % ALIGNMENT)
    with open(path, "wb") as f:
        f.write(out)


def read(path):
    """-> (metadata dict, list of (name, type name, shape, raw bytes))."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n].decode("utf-8", errors="surrogateescape")
        pos += n
        return s

    def value(vtype):
        if vtype == STRING:
            return string()
        if vtype == ARRAY:
            etype, n = take("<I"), take("<Q")
            return [value(etype) for _ in range(n)]
        return take(SCALAR_FORMATS[vtype])

    assert data[:4] == GGUF_MAGIC
    pos = 4
    _version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    metadata = {}
    for _ in range(n_kv):
        key = string()
        metadata[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        tid, off = take("<I"), take("<Q")
        infos.append((name, TYPE_NAMES[tid], list(reversed(dims)), off))
    align = metadata.get("general.alignment", ALIGNMENT)
    base = pos + (-pos % align)
    tensors = []
    for name, tname, shape, off in infos:
        _, values, nbytes = TYPES[tname]
        size = int(np.prod(shape)) // values * nbytes
        tensors.append((name, tname, shape, data[base + off:base + off + size]))
    return metadata, tensors


# ---------------------------------------------------------------------------------------------
# Converting a Hugging Face folder (as make_model.py writes it) the way llama.cpp's converter does:
# llama.cpp tensor names, Q and K rows permuted for llama-architecture RoPE, 1-D tensors in F32,
# the tokenizer and chat template as metadata.

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        raw = data[base + e["data_offsets"][0]:base + e["data_offsets"][1]]
        dt = e["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, np.float32)
        elif dt == "F16":
            a = np.frombuffer(raw, np.float16).astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {dt}")
        out[name] = a.reshape(e["shape"])
    return out


def permute_rope_rows(w, heads):
    """llama.cpp's permutation of q/k rows: each head's rotate-half pairs become adjacent."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def more_bits(layer, layers):
    """Layers whose attn_v and ffn_down llama.cpp's Q4_K_M and Q5_K_M keep in Q6_K."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(name, requested, layer, layers, cols):
    if requested in ("q4_k_m", "q5_k_m"):
        base = requested[:4]
        if name == "output.weight":
            t = "q6_k"
        elif layer is not None and ("attn_v" in name or "ffn_down" in name) and more_bits(
                layer, layers):
            t = "q6_k"
        else:
            t = base
    else:
        t = requested
    values = TYPES[t][1]
    if cols % values != 0:  # as llama.cpp: a row that is not whole blocks falls back
        t = "q8_0" if cols % 32 == 0 and t not in ("f32", "f16", "bf16") else "f16"
        if t == "f16" and requested in ("f32", "bf16"):
            t = requested
    return t


def _adds_bos(tok):
    post = tok.get("post_processor") or {}
    if post.get("type") == "Sequence":
        post = next((p for p in post.get("processors", []) if p.get("type") ==
                     "TemplateProcessing"), {})
    return post.get("type") == "TemplateProcessing" and "SpecialToken" in post["single"][0]


def tokenizer_metadata(tokenizer_dir, pre):
    """The tokenizer.ggml.* metadata of a Hugging Face tokenizer.json, as llama.cpp's converter
    writes it: byte-level BPE as model "gpt2" with its merges, SentencePiece BPE (byte fallback)
    as model "llama" with per-token scores. tokenizer.json has no scores; Hugging Face derived its
    merges from them (ranked by the merged piece's score), so minus the rank of the first merge
    that makes a piece recovers their order; pieces no merge makes score below all of those."""
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    cfg_path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    tok_cfg = {}
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            tok_cfg = json.load(f)
    model = tok["model"]
    assert model["type"] == "BPE", "only BPE tokenizers are converted here"
    spm = bool(model.get("byte_fallback"))
    vocab = dict(model["vocab"])
    added = {}
    for t in tok.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        added[t["id"]] = t
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [5] * size  # unused ids
    scores = [0.0] * size
    for s, i in vocab.items():
        tokens[i] = s
        if i in added:
            types[i] = 3 if added[i].get("special") else 4
            if spm and s == model.get("unk_token"):
                types[i] = 2
        elif spm and len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            types[i] = 6
        else:
            types[i] = 1
    if spm:
        rank = {}
        for r, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            rank.setdefault(a + b, r)
        for s, i in vocab.items():
            if types[i] == 1:
                scores[i] = -float(rank.get(s, len(rank) + i))
    meta = [("tokenizer.ggml.model", STRING, "llama" if spm else "gpt2")]
    if not spm:
        meta.append(("tokenizer.ggml.pre", STRING, pre))
    meta += [("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
             ("tokenizer.ggml.token_type", ARRAY, (I32, types))]
    if spm:
        meta.append(("tokenizer.ggml.scores", ARRAY, (F32V, scores)))
    else:
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        meta.append(("tokenizer.ggml.merges", ARRAY, (STRING, merges)))

    def token_id(value):
        if isinstance(value, dict):
            value = value.get("content")
        return vocab.get(value) if isinstance(value, str) else None

    bos, eos = token_id(tok_cfg.get("bos_token")), token_id(tok_cfg.get("eos_token"))
    if bos is not None:
        meta.append(("tokenizer.ggml.bos_token_id", U32, bos))
    if eos is not None:
        meta.append(("tokenizer.ggml.eos_token_id", U32, eos))
    meta.append(("tokenizer.ggml.add_bos_token", BOOL, _adds_bos(tok)))
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template:
        meta.append(("tokenizer.chat_template", STRING, template))
    return meta


def convert(model_dir, out, requested):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    arch = "qwen2" if cfg.get("model_type") == "qwen2" else "llama"
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    L, H, KV = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"]
    hd = cfg.get("head_dim") or d // H
    meta = [("general.architecture", STRING, arch),
            ("general.name", STRING, os.path.basename(os.path.normpath(model_dir))),
            ("general.file_type", U32, 1),
            (f"{arch}.context_length", U32, cfg["max_position_embeddings"]),
            (f"{arch}.embedding_length", U32, d),
            (f"{arch}.block_count", U32, L),
            (f"{arch}.feed_forward_length", U32, cfg["intermediate_size"]),
            (f"{arch}.attention.head_count", U32, H),
            (f"{arch}.attention.head_count_kv", U32, KV),
            (f"{arch}.attention.key_length", U32, hd),
            (f"{arch}.attention.value_length", U32, hd),
            (f"{arch}.attention.layer_norm_rms_epsilon", F32V, cfg["rms_norm_eps"]),
            (f"{arch}.rope.freq_base", F32V, cfg.get("rope_theta", 10000.0)),
            (f"{arch}.rope.dimension_count", U32, hd)]
    rs = cfg.get("rope_scaling") or {}
    if rs.get("type", rs.get("rope_type")) == "linear":
        meta += [(f"{arch}.rope.scaling.type", STRING, "linear"),
                 (f"{arch}.rope.scaling.factor", F32V, rs["factor"])]
    meta += tokenizer_metadata(model_dir, "qwen2" if arch == "qwen2" else "llama-bpe")
    meta.append((f"{arch}.vocab_size", U32, cfg["vocab_size"]))

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight",
                 "post_attention_layernorm.weight": "ffn_norm.weight",
                 "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight":
                 "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
                 "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_proj.bias":
                 "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias":
                 "attn_v.bias", "self_attn.o_proj.bias": "attn_output.bias",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight":
                 "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
    tensors = []
    for hf_name in sorted(weights, key=lambda n: (n.count("."), n)):
        w = weights[hf_name]
        layer = None
        if hf_name.startswith("model.layers."):
            parts = hf_name.split(".")
            layer = int(parts[2])
            name = f"blk.{layer}." + per_layer[".".join(parts[3:])]
        else:
            name = names[hf_name]
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
            w = permute_rope_rows(w, H)
        if arch == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
            w = permute_rope_rows(w, KV)
        t = "f32" if w.ndim == 1 else tensor_type(name, requested, layer, L, w.shape[-1])
        tensors.append((name, t, list(w.shape), encode(w, t)))
    write(out, meta, tensors)


# PEFT module names -> llama.cpp's per-layer tensor names.
LORA_MODULES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def convert_lora(adapter_dir, model_dir, out, type_name="f32"):
    """A PEFT LoRA adapter as llama.cpp's LoRA converter lays it out: general.type "adapter",
    adapter.type "lora", adapter.lora.alpha; per target <base tensor>.lora_a [r, in] and .lora_b
    [out, r]; for the llama architecture the B rows of q and k permuted as the base's rows are."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    arch = "qwen2" if cfg.get("model_type") == "qwen2" else "llama"
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    weights = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    meta = [("general.architecture", STRING, arch), ("general.type", STRING, "adapter"),
            ("adapter.type", STRING, "lora"), ("adapter.lora.alpha", F32V,
                                               float(acfg["lora_alpha"]))]
    tensors = []
    for name in sorted(weights):
        parts = name.split(".")
        i = parts.index("layers")
        layer, module, which = int(parts[i + 1]), ".".join(parts[i + 2:i + 4]), parts[i + 4]
        w = weights[name]
        base = f"blk.{layer}.{LORA_MODULES[module]}.weight"
        if which == "lora_B" and arch == "llama" and module == "self_attn.q_proj":
            w = permute_rope_rows(w, H)
        if which == "lora_B" and arch == "llama" and module == "self_attn.k_proj":
            w = permute_rope_rows(w, KV)
        suffix = ".lora_a" if which == "lora_A" else ".lora_b"
        t = type_name if w.shape[-1] % TYPES[type_name][1] == 0 else "f32"
        tensors.append((base + suffix, t, list(w.shape), encode(w, t)))
    write(out, meta, tensors)


def random_blocks(out, seed):
    """One tensor per type filled with random bytes (F16 scales kept finite), a tensor of every
    dense type, and metadata of every value type: the reader and dequantizer test's input."""
    rng = np.random.default_rng(seed)
    tensors = []
    for tname, (_, values, nbytes) in TYPES.items():
        rows, cols = 3, 2 * max(values, 32)
        if values == 1:
            arr = rng.standard_normal((rows, cols)).astype(np.float32)
            tensors.append((f"dense.{tname}", tname, [rows, cols], encode(arr, tname)))
            continue
        blocks = rng.integers(0, 256, size=(rows * cols // values, nbytes), dtype=np.uint8)
        finite = _f16(rng.standard_normal(blocks.shape[0] * 2)).view(np.uint8).reshape(-1, 4)
        if tname == "q6_k":
            blocks[:, 208:210] = finite[:, 0:2]
        else:
            blocks[:, 0:2] = finite[:, 0:2]
            if tname in ("q4_k", "q5_k"):
                blocks[:, 2:4] = finite[:, 2:4]
        tensors.append((f"random.{tname}", tname, [rows, cols], blocks.tobytes()))
    meta = [("general.architecture", STRING, "test"), ("test.u8", U8, 7), ("test.i8", I8, -7),
            ("test.u16", U16, 65535), ("test.i16", I16, -300), ("test.u32", U32, 4000000000),
            ("test.i32", I32, -2000000000), ("test.f32", F32V, 0.25), ("test.bool", BOOL, True),
            ("test.string", STRING, "héllo"), ("test.u64", U64, 2 ** 40),
            ("test.i64", I64, -2 ** 40), ("test.f64", F64, 1.5),
            ("test.strings", ARRAY, (STRING, ["a", "", "ü"])),
            ("test.numbers", ARRAY, (I32, [1, -2, 3]))]
    write(out, meta, tensors)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--model", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--type", default="q8_0",
                   choices=sorted(TYPES) + ["q4_k_m", "q5_k_m"])
    r = sub.add_parser("random-blocks")
    r.add_argument("--out", required=True)
    r.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("tokenizer", help="a GGUF file holding only a tokenizer.json's tokenizer")
    t.add_argument("--tokenizer-dir", required=True)
    t.add_argument("--pre", default="llama-bpe")
    t.add_argument("--out", required=True)
    lo = sub.add_parser("lora", help="a PEFT LoRA adapter as llama.cpp's LoRA converter writes it")
    lo.add_argument("--adapter", required=True)
    lo.add_argument("--model", required=True, help="the base model folder")
    lo.add_argument("--out", required=True)
    lo.add_argument("--type", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    dq = sub.add_parser("dequantize")
    dq.add_argument("file")
    dq.add_argument("out")
    args = ap.parse_args(argv)
    if args.cmd == "convert":
        convert(args.model, args.out, args.type)
    elif args.cmd == "lora":
        convert_lora(args.adapter, args.model, args.out, args.type)
    elif args.cmd == "tokenizer":
        write(args.out, [("general.architecture", STRING, "llama")] +
              tokenizer_metadata(args.tokenizer_dir, args.pre), [])
    elif args.cmd == "random-blocks":
        random_blocks(args.out, args.seed)
    else:
        _, tensors = read(args.file)
        np.savez(args.out, **{name: decode(raw, t, shape) for name, t, shape, raw in tensors})


if __name__ == "__main__":
    main(sys.argv[1:])
