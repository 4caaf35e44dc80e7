"""Expert diagnostics computed the direct way, for checking the engine's (which never forms a full
delta): every expert's delta dW = s * B @ A as a full float64 matrix from the adapter's files,
cosine similarity of the flattened deltas, effective rank from numpy's SVD, router row norms."""

import json
import os
import re

import numpy as np

from adapters import load_adapter_tensors, scale  # noqa: F401

_EXPERT = re.compile(r"layers\.(\d+)\.(?:mlp|self_attn)\.(\w+_proj)\.experts\.(\d+)\.lora_([AB])\.weight$")
_PEFT = re.compile(r"layers\.(\d+)\.(?:mlp|self_attn)\.(\w+_proj)\.lora_([AB])(\d*)\.weight$")
_LEGACY = re.compile(r"layers\.(\d+)\.experts\.(\d+)\.(w[123])_proj\.lora_([AB])\.weight$")
_ROUTER = re.compile(r"layers\.(\d+)\.(?:mlp\.(?:(\w+_proj)\.)?|self_attn\.(\w+_proj)\.)?"
                     r"(moe_gate|router|lora_route|gate)\.weight$")
_LEGACY_PROJ = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


def site_deltas(folder):
    """{(layer, site): {"experts": [dW_e float64], "router": ndarray or None}}, with sites named
    as the engine names them (a MixLoRA block's projections "ffn.<proj>")."""
    with open(os.path.join(folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    w = {k: v.double().numpy() for k, v in load_adapter_tensors(folder).items()}
    mixlora = cfg.get("peft_type", "").upper() == "MIXLORA"
    s = scale(cfg["lora_alpha"], cfg["r"], cfg.get("use_rslora", False))
    el = dict(r=cfg["r"], lora_alpha=cfg["lora_alpha"], use_rslora=cfg.get("use_rslora", False))
    el.update(cfg.get("expert_lora") or {})
    expert_s = scale(el["lora_alpha"], el["r"], el.get("use_rslora", False))
    pairs = {}  # (layer, site) -> {expert or None: {"A": .., "B": ..}}
    routers = {}
    block_router = {}
    for name, t in w.items():
        if name.endswith((".head.lora_A.weight", ".head.lora_B.weight", ".merge.lora_A.weight",
                          ".merge.lora_B.weight")):
            continue  # MH-MoE's head and merge projections are not experts
        if m := _LEGACY.search(name):
            l, e, proj, ab = int(m[1]), int(m[2]), _LEGACY_PROJ[m[3]], m[4]
            pairs.setdefault((l, "ffn." + proj), {}).setdefault(e, {})[ab] = t
        elif m := _EXPERT.search(name):
            l, proj, e, ab = int(m[1]), m[2], int(m[3]), m[4]
            site = "ffn." + proj if mixlora else proj
            pairs.setdefault((l, site), {}).setdefault(e, {})[ab] = t
        elif m := _PEFT.search(name):
            l, proj, ab, e = int(m[1]), m[2], m[3], (int(m[4]) if m[4] else None)
            pairs.setdefault((l, proj), {}).setdefault(e, {})[ab] = t
        elif m := _ROUTER.search(name):
            proj = m[2] or m[3]
            if proj is None:
                block_router[int(m[1])] = t
            else:
                routers[(int(m[1]), proj)] = t
    out = {}
    for (l, site), by_expert in pairs.items():
        shared_a = by_expert.get(None, {}).get("A")
        experts = sorted(e for e in by_expert if e is not None)
        factor = expert_s if site.startswith("ffn.") else s
        if not experts:  # plain LoRA
            p = by_expert[None]
            deltas = [factor * p["B"] @ p["A"]]
        else:
            deltas = [factor * by_expert[e]["B"] @ by_expert[e].get("A", shared_a)
                      for e in experts]
        router = block_router.get(l) if site.startswith("ffn.") else routers.get((l, site))
        out[(l, site)] = {"experts": deltas, "router": router}
    return out


def diagnose(deltas):
    """(similarity [E, E], norms [E], effective ranks [E]) of full deltas."""
    flat = np.stack([d.ravel() for d in deltas])
    norms = np.linalg.norm(flat, axis=1)
    sim = (flat @ flat.T) / np.outer(norms, norms)
    ranks = []
    for d in deltas:
        sigma = np.linalg.svd(d, compute_uv=False)
        p = sigma / sigma.sum()
        p = p[p > 0]
        ranks.append(float(np.exp(-(p * np.log(p)).sum())))
    return sim, norms, np.array(ranks)
