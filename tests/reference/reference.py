"""An independent PyTorch implementation of Hugging Face's Llama-family forward pass.

Plain torch (Debian's python3-torch), no transformers: it reads the same model folder (its own
safetensors parser) and follows LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM
semantics: rotate-half RoPE with HF's inverse frequencies (linear and llama3 scaling), GQA by
repeating K/V heads, RMSNorm in F32, SiLU-gated MLP, causal (optionally sliding-window)
attention. Weights stored as BF16/F16 are upcast to F32 and every op runs in F32: the semantics
Switchyard implements ("weights stay BF16, compute accumulates in F32").
"""

import json
import math
import os

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=DTYPES[info["dtype"]], count=(end - begin) // np.dtype(
            DTYPES[info["dtype"]]).itemsize, offset=base + begin)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32).reshape(info["shape"]))
    return out


def load_tensors(folder, stem="model"):
    index = os.path.join(folder, stem + ".safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for fname in files:
            tensors.update(load_safetensors(os.path.join(folder, fname)))
        return tensors
    return load_safetensors(os.path.join(folder, stem + ".safetensors"))


def rope_inv_freq(config, head_dim):
    base = float(config.get("rope_theta", 10000.0))
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = config.get("rope_scaling")
    if not rs:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv_freq / rs["factor"]
    if kind == "llama3":  # transformers' _compute_llama3_parameters
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old_len = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * llama / factor + smooth * llama
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, llama)
    raise ValueError(f"rope scaling {kind} not in the reference")


def rms_norm(x, weight, eps):
    x = x.float()
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "relu": torch.relu,
}


class ReferenceModel:
    def __init__(self, folder):
        with open(os.path.join(folder, "config.json")) as f:
            self.config = json.load(f)
        c = self.config
        self.arch = c["architectures"][0]
        self.w = load_tensors(folder)
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.inv_freq = rope_inv_freq(c, self.head_dim)
        self.act = ACTIVATIONS[c.get("hidden_act", "silu")]
        window = c.get("sliding_window") or 0
        self.windows = [0] * self.layers
        if self.arch == "MistralForCausalLM" and window:
            self.windows = [window] * self.layers
        if self.arch == "Qwen2ForCausalLM" and window and c.get("use_sliding_window"):
            first = c.get("max_window_layers", self.layers)
            self.windows = [window if l >= first else 0 for l in range(self.layers)]
        self.lm_head = self.w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else \
            self.w["lm_head.weight"]

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        return y

    def attention_mask(self, T, window):
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        allowed = j <= i
        if window:
            allowed = allowed & (i - j < window)
        return allowed

    def forward(self, ids, hooks=None):
        """Logits [T, vocab] (F32) for one sequence, computed from scratch."""
        T = len(ids)
        h = self.w["model.embed_tokens.weight"][torch.tensor(ids)]
        pos = torch.arange(T).float()
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        for l in range(self.layers):
            p = f"model.layers.{l}."
            x = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
            q = self.linear(x, p + "self_attn.q_proj")
            k = self.linear(x, p + "self_attn.k_proj")
            v = self.linear(x, p + "self_attn.v_proj")
            if hooks:
                q = hooks.linear(l, "q_proj", x, q)
                k = hooks.linear(l, "k_proj", x, k)
                v = hooks.linear(l, "v_proj", x, v)
            q = q.view(T, H, hd).transpose(0, 1)
            k = k.view(T, KV, hd).transpose(0, 1)
            v = v.view(T, KV, hd).transpose(0, 1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(H // KV, dim=0)
            v = v.repeat_interleave(H // KV, dim=0)
            scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
            scores = scores.masked_fill(~self.attention_mask(T, self.windows[l]), float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1)
            attn = (probs @ v).transpose(0, 1).reshape(T, H * hd)
            o = self.linear(attn, p + "self_attn.o_proj")
            if hooks:
                o = hooks.linear(l, "o_proj", attn, o)
            h = h + o
            x = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
            if hooks and hooks.has_mixlora(l):
                h = h + hooks.mixlora(l, x, self)
            else:
                h = h + self.mlp(l, x, hooks)
        h = rms_norm(h, self.w["model.norm.weight"], self.eps)
        return self.head(h)

    def head(self, h):
        return h @ self.lm_head.T

    def mlp(self, l, x, hooks=None):
        p = f"model.layers.{l}.mlp."
        g = self.linear(x, p + "gate_proj")
        u = self.linear(x, p + "up_proj")
        if hooks:
            g = hooks.linear(l, "gate_proj", x, g)
            u = hooks.linear(l, "up_proj", x, u)
        a = self.act(g) * u
        d = self.linear(a, p + "down_proj")
        if hooks:
            d = hooks.linear(l, "down_proj", a, d)
        return d

    def greedy(self, ids, n, hooks=None):
        ids = list(ids)
        out = []
        for _ in range(n):
            logits = self.forward(ids, hooks)
            t = int(torch.argmax(logits[-1]))
            out.append(t)
            ids.append(t)
        return out
