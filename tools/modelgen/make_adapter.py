#!/usr/bin/python3
"""Writes deterministic MoE-LoRA adapter folders for a base model, in the formats real trainers
write: MoE-PEFT's torch.save adapter_model.bin (MIXLORA mixlora|dynamic|switch, LORAMOE, MOLA),
the legacy mLoRA MixLoRA scheme, PEFT safetensors (plain LoRA; the HydraLoRA and LoRAMoE forks),
and Switchyard's MH-MoE-LoRA. Used by the tests, the demo and the benchmarks.

  make_adapter.py --model DIR --out DIR --family mixlora [--format bin|safetensors|safetensors-bf16]
                  [--experts 8] [--top-k 2] [--r 16] [--seed 0] ...
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_model  # noqa: E402  (write_safetensors, to_dtype)

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
FAMILIES = ["mixlora", "mixlora-dynamic", "mixlora-switch", "mlora-legacy", "loramoe", "mola",
            "mhmoe", "lora", "hydralora", "loramoe-peft"]


def site_dims(c, site):
    d = c["hidden_size"]
    hd = c.get("head_dim") or d // c["num_attention_heads"]
    q = c["num_attention_heads"] * hd
    kv = c.get("num_key_value_heads", c["num_attention_heads"]) * hd
    f = c["intermediate_size"]
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}[site]


def scale(alpha, r, rslora):
    return alpha / math.sqrt(r) if rslora else alpha / r


# ---------------------------------------------------------------------------------------------
# Fixtures


class Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def lora(self, r, din, dout, b_scale=0.6):
        # Large enough that every expert visibly changes the output.
        a = self.rng.standard_normal((r, din)).astype(np.float32) / math.sqrt(din)
        b = self.rng.standard_normal((dout, r)).astype(np.float32) * (b_scale / math.sqrt(r))
        return a, b

    def router(self, e, din):
        # Decisive routers: logit gaps far above F32 rounding.
        return self.rng.standard_normal((e, din)).astype(np.float32) * (2.5 / math.sqrt(din))


def write(folder, config, tensors, fmt):
    """tensors: dict name -> float32 ndarray."""
    os.makedirs(folder, exist_ok=True)
    for name in ("adapter_model.bin", "adapter_model.safetensors"):
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if fmt == "bin":
        state = {}
        for k, v in tensors.items():
            t = torch.from_numpy(v)
            # One transposed (non-contiguous) view, as a trainer's state can hold.
            if k.endswith("experts.1.lora_B.weight"):
                t = torch.from_numpy(np.ascontiguousarray(v.T)).t()
            state[k] = t
        torch.save(state, os.path.join(folder, "adapter_model.bin"))
    else:
        dtype = "bf16" if fmt == "safetensors-bf16" else "f32"
        make_model.write_safetensors(
            os.path.join(folder, "adapter_model.safetensors"),
            [(k,) + make_model.to_dtype(v, dtype) for k, v in tensors.items()])


def make_adapter(folder, base, family, seed, fmt="bin", experts=4, top_k=2, r=8, alpha=16,
                 rslora=False, expert_r=None, targets=None, top_p=0.75, temperature=0.0,
                 heads=2, head_rank=0, merge_rank=0, act_fn=None, layers=None, dead_expert=None,
                 duplicate_expert=None):
    """Writes one adapter folder for the base model config `base` (a dict).

    dead_expert (MixLoRA top-1): that expert's router row is the mean of two other experts' rows,
    so its logit never exceeds both of theirs and top-1 routing never selects it.

    duplicate_expert=(src, dst) (MoE-PEFT layouts: experts.{e}.): expert dst's LoRA becomes a
    copy of expert src's with B halved, a redundant pair (cosine 1) for the expert diagnostics."""
    g = Gen(seed)
    L = base["num_hidden_layers"]
    layers = list(range(L)) if layers is None else layers
    d = base["hidden_size"]
    tensors = {}
    cfg = {"r": r, "lora_alpha": alpha, "lora_dropout": 0.05, "bias": "none",
           "task_type": "CAUSAL_LM", "base_model_name_or_path": "switchyard-test"}
    if rslora:
        cfg["use_rslora"] = True
    if family.startswith("mixlora") or family == "mlora-legacy":
        targets = targets or ATTN + MLP
        strategy = {"mixlora": "mixlora", "mixlora-dynamic": "mixlora-dynamic",
                    "mixlora-switch": "mixlora-switch", "mlora-legacy": "mixtral"}[family]
        cfg.update({"peft_type": "MIXLORA", "routing_strategy": strategy, "num_experts": experts,
                    "target_modules": targets})
        if strategy in ("mixlora", "mixtral"):
            cfg["top_k"] = top_k
        if strategy == "mixlora-dynamic":
            cfg.update({"top_p": top_p, "temperature": temperature})
        if strategy == "mixlora-switch":
            cfg.update({"expert_capacity": 32})
        if act_fn:
            cfg["act_fn"] = act_fn
        er = expert_r or r
        if expert_r:
            cfg["expert_lora"] = {"r": expert_r, "lora_alpha": alpha * 2, "lora_dropout": 0.05}
        legacy = family == "mlora-legacy"
        legacy_name = {"gate_proj": "w1_proj", "down_proj": "w2_proj", "up_proj": "w3_proj"}
        for l in range(L):
            p = f"mixlora.layers.{l}."
            if l not in layers:
                continue
            router = g.router(experts, d)
            if dead_expert is not None:
                assert top_k == 1 and family == "mixlora" and experts >= 3
                others = [e for e in range(experts) if e != dead_expert][:2]
                router[dead_expert] = (router[others[0]] + router[others[1]]) / 2
            tensors[p + ("gate.weight" if legacy else "mlp.moe_gate.weight")] = router
            for e in range(experts):
                for proj in MLP:
                    if proj not in targets:
                        continue
                    din, dout = site_dims(base, proj)
                    a, b = g.lora(er, din, dout)
                    key = (p + f"experts.{e}.{legacy_name[proj]}." if legacy else
                           p + f"mlp.{proj}.experts.{e}.")
                    tensors[key + "lora_A.weight"] = a
                    tensors[key + "lora_B.weight"] = b
            for proj in ATTN:
                if proj in targets:
                    din, dout = site_dims(base, proj)
                    a, b = g.lora(r, din, dout)
                    tensors[p + f"self_attn.{proj}.lora_A.weight"] = a
                    tensors[p + f"self_attn.{proj}.lora_B.weight"] = b
    elif family in ("loramoe", "mola", "mhmoe"):
        prefix = {"loramoe": "loramoe", "mola": "mola", "mhmoe": "mhmoe"}[family]
        targets = targets or (MLP if family == "loramoe" else ATTN + MLP)
        cfg.update({"peft_type": {"loramoe": "LORAMOE", "mola": "MOLA", "mhmoe": "MHMOE_LORA"}[family],
                    "num_experts": experts, "target_modules": targets})
        if family != "mhmoe":
            cfg["routing_strategy"] = family
        per_layer_e = None
        if family == "mola":
            # MoLA: more experts and top-k in higher layers, per the paper.
            per_layer_e = [max(2, experts - 2 + 2 * l) for l in range(L)]
            cfg["top_k"] = [min(per_layer_e[l], 1 + l % 2 + (1 if l >= L // 2 else 0)) for l in range(L)]
            cfg["num_experts"] = max(per_layer_e)
        if family == "mhmoe":
            cfg.update({"num_heads": heads, "top_k": top_k, "head_rank": head_rank,
                        "merge_rank": merge_rank})
        for l in range(L):
            if l not in layers:
                continue
            for proj in targets:
                parent = "self_attn" if proj in ATTN else "mlp"
                p = f"{prefix}.layers.{l}.{parent}.{proj}."
                din, dout = site_dims(base, proj)
                if family == "loramoe" and proj in ATTN:  # plain LoRA on attention
                    a, b = g.lora(r, din, dout)
                    tensors[p + "lora_A.weight"] = a
                    tensors[p + "lora_B.weight"] = b
                    continue
                E = per_layer_e[l] if per_layer_e else experts
                h = heads if family == "mhmoe" else 1
                tensors[p + ("router.weight" if family == "mhmoe" else "moe_gate.weight")] = \
                    g.router(E, din // h)
                for e in range(E):
                    a, b = g.lora(r, din // h, dout // h)
                    tensors[p + f"experts.{e}.lora_A.weight"] = a
                    tensors[p + f"experts.{e}.lora_B.weight"] = b
                if family == "mhmoe" and head_rank:  # a gentle head keeps routing unsaturated
                    a, b = g.lora(head_rank, din, din, b_scale=0.05)
                    tensors[p + "head.lora_A.weight"] = a
                    tensors[p + "head.lora_B.weight"] = b
                if family == "mhmoe" and merge_rank:
                    a, b = g.lora(merge_rank, dout, dout, b_scale=0.05)
                    tensors[p + "merge.lora_A.weight"] = a
                    tensors[p + "merge.lora_B.weight"] = b
        if family == "loramoe":
            cfg["target_modules"] = targets + [t for t in ATTN if t not in targets]
            for l in range(L):
                if l not in layers:
                    continue
                for proj in ATTN:
                    if f"loramoe.layers.{l}.self_attn.{proj}.lora_A.weight" in tensors:
                        continue
                    din, dout = site_dims(base, proj)
                    a, b = g.lora(r, din, dout)
                    tensors[f"loramoe.layers.{l}.self_attn.{proj}.lora_A.weight"] = a
                    tensors[f"loramoe.layers.{l}.self_attn.{proj}.lora_B.weight"] = b
    elif family in ("lora", "hydralora", "loramoe-peft"):
        targets = targets or (ATTN + MLP if family == "lora" else MLP)
        cfg.update({"peft_type": "LORA", "target_modules": targets})
        if family != "lora":
            cfg["lora_nums"] = experts
        for l in range(L):
            if l not in layers:
                continue
            for proj in targets:
                parent = "self_attn" if proj in ATTN else "mlp"
                p = f"base_model.model.model.layers.{l}.{parent}.{proj}."
                din, dout = site_dims(base, proj)
                if family == "lora":
                    a, b = g.lora(r, din, dout)
                    tensors[p + "lora_A.weight"] = a
                    tensors[p + "lora_B.weight"] = b
                    continue
                tensors[p + "lora_route.weight"] = g.router(experts, din)
                if family == "hydralora":
                    a, _ = g.lora(r, din, dout)
                    tensors[p + "lora_A.weight"] = a
                for e in range(experts):
                    a, b = g.lora(r, din, dout)
                    if family == "loramoe-peft":
                        tensors[p + f"lora_A{e}.weight"] = a
                    tensors[p + f"lora_B{e}.weight"] = b
    else:
        raise ValueError(family)
    if duplicate_expert is not None:
        src, dst = duplicate_expert
        for k in list(tensors):
            if f"experts.{dst}." in k and ".lora_" in k:
                twin = tensors[k.replace(f"experts.{dst}.", f"experts.{src}.")]
                tensors[k] = twin * np.float32(0.5 if ".lora_B" in k else 1.0)
    write(folder, cfg, tensors, fmt)
    return folder


def make_router_adapter(folder, base, seed, members, routing="topk", top_k=2,
                        fmt="safetensors"):
    """A router over adapters (peft_type MIXTURE, docs/adapters.md): each member (name, family,
    options) written below `folder` with LoRA on the FFN only, and a router on every layer's FFN
    input over them."""
    g = Gen(seed)
    names = []
    for i, (name, family, opts) in enumerate(members):
        opts = dict(opts)
        opts.setdefault("targets", MLP)
        make_adapter(os.path.join(folder, "members", name), base, family, seed=seed * 100 + i + 1,
                     fmt=opts.pop("fmt", "safetensors"), **opts)
        names.append(f"members/{name}")
    tensors = {f"mixture.layers.{l}.router.weight": g.router(len(members), base["hidden_size"])
               for l in range(base["num_hidden_layers"])}
    cfg = {"peft_type": "MIXTURE", "members": names, "routing": routing}
    if routing == "topk":
        cfg["top_k"] = top_k
    write(folder, cfg, tensors, fmt)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="base model folder (its config.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--family", choices=FAMILIES + ["mixture"], default="mixlora")
    ap.add_argument("--format", choices=["bin", "safetensors", "safetensors-bf16"], default="bin")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--targets", default="", help="comma-separated target modules")
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dead-expert", type=int, default=None,
                    help="MixLoRA top-1: an expert the router can never choose")
    ap.add_argument("--duplicate-expert", default=None, metavar="SRC:DST",
                    help="expert DST's LoRA a copy of SRC's (a redundant pair)")
    ap.add_argument("--members", type=int, default=4,
                    help="--family mixture: member adapters (each --member-family)")
    ap.add_argument("--member-family", choices=FAMILIES, default="mixlora")
    ap.add_argument("--routing", choices=["topk", "dense"], default="topk",
                    help="--family mixture: how the router picks members")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        base = json.load(f)
    if args.family == "mixture":
        opts = dict(experts=args.experts, top_k=args.top_k, r=args.r, alpha=args.alpha)
        make_router_adapter(args.out, base, args.seed,
                            [(f"m{i}", args.member_family, opts) for i in range(args.members)],
                            routing=args.routing, top_k=args.top_k)
        return
    make_adapter(args.out, base, args.family, args.seed, fmt=args.format, experts=args.experts,
                 top_k=args.top_k, r=args.r, alpha=args.alpha, rslora=args.rslora,
                 targets=[t for t in args.targets.split(",") if t] or None, heads=args.heads,
                 dead_expert=args.dead_expert,
                 duplicate_expert=tuple(int(x) for x in args.duplicate_expert.split(":"))
                 if args.duplicate_expert else None)


if __name__ == "__main__":
    main()
