"""Reference math of every MoE-LoRA family for the parity suite, written from MoE-PEFT's code and
the papers (shared/design/moe-lora-methods.md), not from Switchyard's: MixLoRA experts are whole
FFNs whose outputs are summed per expert (the reference implementations' k down projections),
routing as MoE-PEFT does it, F32 throughout, no dropout. The fixtures come from
tools/modelgen/make_adapter.py.
"""

import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "modelgen"))
from make_adapter import (ATTN, MLP, make_adapter, make_router_adapter, scale,  # noqa: E402,F401
                          site_dims)

# ---------------------------------------------------------------------------------------------
# Reference math


def load_adapter_tensors(folder):
    if os.path.exists(os.path.join(folder, "adapter_model.safetensors")):
        sys.path.insert(0, HERE)
        import reference
        return reference.load_safetensors(os.path.join(folder, "adapter_model.safetensors"))
    state = torch.load(os.path.join(folder, "adapter_model.bin"), map_location="cpu")
    return {k: v.float().contiguous() for k, v in state.items()}


def softmax32(logits):
    return torch.softmax(logits.float(), dim=-1, dtype=torch.float32)


class AdapterReference:
    """Forward hooks for reference.ReferenceModel implementing one adapter."""

    def __init__(self, folder, base, factor_dtype=None):
        """factor_dtype=torch.bfloat16 rounds each LoRA pair as the engine holds it on a
        half-precision base model: A and s*B in BF16 (routers stay F32)."""
        self.factor_dtype = factor_dtype
        with open(os.path.join(folder, "adapter_config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_adapter_tensors(folder)
        self.base = base
        c = self.cfg
        self.peft_type = c.get("peft_type", "LORA").upper()
        self.strategy = c.get("routing_strategy", "")
        self.legacy = self.strategy in ("mixtral", "switch")
        self.s = scale(c["lora_alpha"], c["r"], c.get("use_rslora", False))
        el = dict(r=c["r"], lora_alpha=c["lora_alpha"], use_rslora=c.get("use_rslora", False))
        el.update(c.get("expert_lora") or {})
        self.expert_s = scale(el["lora_alpha"], el["r"], el.get("use_rslora", False))
        self.decisions = []  # (position, layer, site, head, sorted experts)
        self.stats = {}  # (layer, site) -> sums, as the engine's SiteRoutingStats

    def lora(self, x, prefix, s):
        return self.pair(x, self.w[prefix + "lora_A.weight"], self.w[prefix + "lora_B.weight"], s)

    def pair(self, x, a, b, s):
        if self.factor_dtype is None:
            return s * ((x @ a.T) @ b.T)
        a = a.to(self.factor_dtype).float()
        b = (b * s).to(self.factor_dtype).float()
        return (x @ a.T) @ b.T

    # -- routing, as MoE-PEFT computes it --
    def route(self, logits, strategy, top_k=2, top_p=0.8, temperature=0.0):
        """Returns (probs, list per row of [(expert, weight)]). Records each row's margin: how far
        its selection is from flipping (probability gap at the top-k boundary, or distance of the
        cumulative sums from top_p); F32 rounding may decide rows with a tiny margin either way."""
        probs = softmax32(logits)
        self.last_logits, self.last_probs = logits.double(), probs.double()
        out = []
        self.margins = []
        for row in probs:
            srt = torch.sort(row, descending=True).values
            if strategy in ("topk", "topk_raw") and top_k < len(row):
                self.margins.append(float(srt[top_k - 1] - srt[top_k]))
            elif strategy == "switch":
                self.margins.append(float(srt[0] - srt[1]))
            elif strategy == "top_p":
                p = srt / temperature if temperature > 0 else srt
                self.margins.append(float((p.cumsum(-1) - top_p).abs().min()))
            else:
                self.margins.append(float("inf"))
            if strategy == "dense":
                out.append([(e, row[e]) for e in range(row.shape[0])])
            elif strategy in ("topk", "topk_raw"):
                w, idx = torch.topk(row, top_k)
                if strategy == "topk":
                    w = w / w.sum()
                out.append(sorted(zip(idx.tolist(), w)))
            elif strategy == "switch":
                e = int(torch.argmax(row))
                out.append([(e, row[e])])
            elif strategy == "top_p":
                p = row / temperature if temperature > 0 else row
                sorted_p, sorted_idx = torch.sort(p, descending=True)
                cum = sorted_p.cumsum(dim=-1)
                mask = cum > top_p
                thr = int(mask.long().argmax())
                drop = mask.clone()
                drop[thr] = False
                out.append(sorted((int(sorted_idx[i]), sorted_p[i]) for i in range(len(p)) if not drop[i]))
            else:
                raise ValueError(strategy)
        return probs, out

    def record(self, layer, site, routes, heads=1):
        for r, sel in enumerate(routes):
            self.decisions.append((r // heads, layer, site, r % heads, sorted(e for e, _ in sel),
                                   self.margins[r]))
        E = self.last_probs.shape[-1]
        st = self.stats.setdefault((layer, site), dict(
            tokens=0, selections=[0] * E, gate_sum=[0.0] * E, prob_sum=[0.0] * E,
            entropy_sum=0.0, z_sum=0.0, experts_per_token=[0] * (E + 1)))
        p = self.last_probs
        st["tokens"] += len(routes)
        for e in range(E):
            st["prob_sum"][e] += float(p[:, e].sum())
        st["entropy_sum"] += float(-(p * torch.log(p)).nan_to_num().sum())
        st["z_sum"] += float((torch.logsumexp(self.last_logits, dim=-1) ** 2).sum())
        for sel in routes:
            st["experts_per_token"][len(sel)] += 1
            for e, w in sel:
                st["selections"][e] += 1
                st["gate_sum"][e] += float(w)

    # -- hooks --
    def linear(self, l, site, x, y):
        c = self.cfg
        parent = "self_attn" if site in ATTN else "mlp"
        site_index = (ATTN + MLP).index(site)
        if self.peft_type == "MIXLORA":
            p = f"mixlora.layers.{l}.self_attn.{site}."
            if site in ATTN and p + "lora_A.weight" in self.w:
                return y + self.lora(x, p, self.s)
            return y
        if self.peft_type == "LORA":
            p = f"base_model.model.model.layers.{l}.{parent}.{site}."
            if p + "lora_route.weight" in self.w:  # HydraLoRA / official LoRAMoE: dense
                _, routes = self.route(x @ self.w[p + "lora_route.weight"].T, "dense")
                self.record(l, site_index, routes)
                n = c["lora_nums"]
                out = y.clone()
                for e in range(n):
                    a = self.w[p + ("lora_A.weight" if p + "lora_A.weight" in self.w else f"lora_A{e}.weight")]
                    b = self.w[p + f"lora_B{e}.weight"]
                    wcol = torch.stack([dict(rt)[e] for rt in routes]).unsqueeze(-1)
                    out = out + wcol * self.pair(x, a, b, self.s)
                return out
            if p + "lora_A.weight" in self.w:
                return y + self.lora(x, p, self.s)
            return y
        prefix = {"LORAMOE": "loramoe", "MOLA": "mola", "MHMOE_LORA": "mhmoe"}[self.peft_type]
        p = f"{prefix}.layers.{l}.{parent}.{site}."
        if p + "lora_A.weight" in self.w:  # LoRAMoE's plain attention LoRA
            return y + self.lora(x, p, self.s)
        gate = p + ("router.weight" if self.peft_type == "MHMOE_LORA" else "moe_gate.weight")
        if gate not in self.w:
            return y
        G = self.w[gate]
        E = G.shape[0]
        if self.peft_type == "LORAMOE":
            _, routes = self.route(x @ G.T, "dense")
            self.record(l, site_index, routes)
            out = y.clone()
            for e in range(E):  # result += w_e * B_e(A_e x) * s, experts in order (MoE-PEFT)
                wcol = torch.stack([dict(rt)[e] for rt in routes]).unsqueeze(-1)
                out = out + wcol * self.lora(x, p + f"experts.{e}.", self.s)
            return out
        if self.peft_type == "MOLA":
            top_k = c["top_k"][l] if isinstance(c["top_k"], list) else c["top_k"]
            _, routes = self.route(x @ G.T, "topk", top_k=top_k)
            self.record(l, site_index, routes)
            out = y.clone()
            for t, sel in enumerate(routes):
                for e, w in sel:
                    out[t] = out[t] + w * self.lora(x[t:t + 1], p + f"experts.{e}.", self.s)[0]
            return out
        # MH-MoE-LoRA (docs/adapters.md)
        h = c["num_heads"]
        xh = x
        if c.get("head_rank", 0):
            xh = x + self.lora(x, p + "head.", scale(c["lora_alpha"], c["head_rank"], c.get("use_rslora", False)))
        T, din = x.shape
        dout = y.shape[1]
        sub = xh.reshape(T * h, din // h)
        _, routes = self.route(sub @ G.T, "topk" if c.get("renormalize") else "topk_raw", top_k=c["top_k"])
        self.record(l, site_index, routes, heads=h)
        o = torch.zeros(T * h, dout // h)
        for r_, sel in enumerate(routes):
            for e, w in sel:
                o[r_] = o[r_] + w * self.lora(sub[r_:r_ + 1], p + f"experts.{e}.", self.s)[0]
        o = o.reshape(T, dout)
        if c.get("merge_rank", 0):
            o = o + self.lora(o, p + "merge.", scale(c["lora_alpha"], c["merge_rank"], c.get("use_rslora", False)))
        return y + o

    def has_mixlora(self, l):
        key = f"mixlora.layers.{l}." + ("gate.weight" if self.legacy else "mlp.moe_gate.weight")
        return self.peft_type == "MIXLORA" and key in self.w

    def mixlora(self, l, x, ref):
        """MoE-PEFT's MixtralSparseMoe forward: every selected expert a full FFN, summed."""
        mp = f"model.layers.{l}.mlp."
        W1, W3, W2 = (ref.w[mp + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        final = torch.zeros_like(x)
        # W1 x and W3 x are shared by all experts (MixLoRA); W2 runs per (token, expert), as the
        # reference does.
        for rows, a, weights, down_lora in self.mixlora_experts(l, x, x @ W1.T, x @ W3.T, ref):
            y = a @ W2.T + down_lora(a)
            final.index_add_(0, torch.tensor(rows), y * weights)
        return final

    def mixlora_parts(self, l, x, gate, up, ref):
        """For mixtures: over the given base gate and up outputs, (sum_e g_e a_e, the expert
        activations weighted, and sum_e g_e B_e A_e a_e, the weighted down corrections)."""
        acts = torch.zeros_like(gate)
        down = torch.zeros_like(x)
        for rows, a, weights, down_lora in self.mixlora_experts(l, x, gate, up, ref):
            idx = torch.tensor(rows)
            acts.index_add_(0, idx, a * weights)
            down.index_add_(0, idx, down_lora(a) * weights)
        return acts, down

    def mixlora_experts(self, l, x, common1, common3, ref):
        """Routes the block and yields, per expert with rows: (rows, its activations on them, their
        gate weights as a column, its down LoRA as a function)."""
        c = self.cfg
        p = f"mixlora.layers.{l}."
        G = self.w[p + ("gate.weight" if self.legacy else "mlp.moe_gate.weight")]
        strategy = {"mixlora": "topk", "mixtral": "topk", "mixlora-dynamic": "top_p",
                    "mixlora-switch": "switch", "switch": "switch"}[self.strategy]
        _, routes = self.route(x @ G.T, strategy, top_k=c.get("top_k", 2), top_p=c.get("top_p", 0.8),
                               temperature=c.get("temperature", 0.0))
        self.record(l, 7, routes)
        act = ref.act if not c.get("act_fn") else ACTS[c["act_fn"]]
        legacy = {"gate_proj": "w1_proj", "down_proj": "w2_proj", "up_proj": "w3_proj"}
        for e in range(G.shape[0]):
            rows = [t for t, sel in enumerate(routes) if e in dict(sel)]
            if not rows:
                continue
            xs = x[rows]

            def lora_of(proj, inp, width, e=e):
                pre = (p + f"experts.{e}.{legacy[proj]}." if self.legacy else
                       p + f"mlp.{proj}.experts.{e}.")
                if pre + "lora_A.weight" in self.w:
                    return self.lora(inp, pre, self.expert_s)
                return torch.zeros(inp.shape[0], width)
            F, d = common1.shape[1], x.shape[1]
            w1 = common1[rows] + lora_of("gate_proj", xs, F)
            w3 = common3[rows] + lora_of("up_proj", xs, F)
            weights = torch.stack([dict(routes[t])[e] for t in rows]).unsqueeze(-1)
            yield rows, act(w1) * w3, weights, lambda a, f=lora_of, d=d: f("down_proj", a, d)


class MixtureReference:
    """Forward hooks for a mixture of adapters: [(AdapterReference, weight)], per
    docs/adapters.md "Mixtures". Each linear site gets the members' deltas weighted; a layer with
    MixLoRA members mixes their expert activations into the FFN activation,
    act = a0 + sum_m w_m (sum_e g_e a_e - a0), and adds their weighted down corrections, where a0
    and the experts ride on the gate and up outputs the other members' site deltas made."""

    def __init__(self, members):
        self.members = members

    def linear(self, l, site, x, y):
        out = y
        for h, w in self.members:
            out = out + w * (h.linear(l, site, x, y) - y)
        return out

    def has_mixlora(self, l):
        return any(h.has_mixlora(l) for h, _ in self.members)

    def mixlora(self, l, x, ref):
        p = f"model.layers.{l}.mlp."
        gate = self.linear(l, "gate_proj", x, ref.linear(x, p + "gate_proj"))
        up = self.linear(l, "up_proj", x, ref.linear(x, p + "up_proj"))
        a0 = ref.act(gate) * up
        act, extra = a0.clone(), torch.zeros_like(x)
        for h, w in self.members:
            if h.has_mixlora(l):
                acts, down = h.mixlora_parts(l, x, gate, up, ref)
                act = act + w * (acts - a0)
                extra = extra + w * down
        return self.linear(l, "down_proj", act, ref.linear(act, p + "down_proj")) + extra

ACTS = {
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "relu": torch.relu,
}


class RouterReference(AdapterReference):
    """Forward hooks for a router over adapters (peft_type MIXTURE, docs/adapters.md): per layer,
    a router on the FFN input picks members per token (top-k renormalised, or dense softmax);
    each member's FFN deltas count with its gate weight. Routing decisions and statistics are the
    router's, members as experts (site 7, as a MixLoRA block's)."""

    def __init__(self, folder, base, factor_dtype=None):  # noqa: super() needs a LoRA config
        with open(os.path.join(folder, "adapter_config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_adapter_tensors(folder)
        self.base = base
        self.factor_dtype = factor_dtype
        self.members = [AdapterReference(os.path.join(folder, m), base, factor_dtype)
                        for m in self.cfg["members"]]
        self.decisions = []
        self.stats = {}
        self.cached = None  # (layer, x, gates): the gate/up, MixLoRA and down hooks share them

    def gates(self, l, x):
        """[tokens, members]: each member's gate weight (0 where the router did not pick it)."""
        if self.cached is not None and self.cached[0] == l and self.cached[1].shape == x.shape \
                and torch.equal(self.cached[1], x):
            return self.cached[2]
        R = self.w[f"mixture.layers.{l}.router.weight"]
        routing = self.cfg.get("routing", "topk")
        _, routes = self.route(x @ R.T, "topk" if routing == "topk" else "dense",
                               top_k=self.cfg.get("top_k", 2))
        self.record(l, 7, routes)
        G = torch.zeros(x.shape[0], len(self.members))
        for t, sel in enumerate(routes):
            for e, w in sel:
                G[t, e] = w
        self.cached = (l, x.clone(), G)
        return G

    def linear(self, l, site, x, y):
        if site in ATTN:
            return y
        # gate_proj and up_proj read the FFN input; down_proj reads the activation after them.
        G = self.gates(l, x) if site != "down_proj" else self.cached[2]
        out = y
        for i, h in enumerate(self.members):
            out = out + G[:, i:i + 1] * (h.linear(l, site, x, y) - y)
        return out

    def has_mixlora(self, l):
        return any(h.has_mixlora(l) for h in self.members)

    def mixlora_parts(self, l, x, gate, up, ref):
        G = self.gates(l, x)
        acts, down = torch.zeros_like(gate), torch.zeros_like(x)
        for i, h in enumerate(self.members):
            a, d = h.mixlora_parts(l, x, gate, up, ref)
            acts = acts + G[:, i:i + 1] * a
            down = down + G[:, i:i + 1] * d
        return acts, down

    def mixlora(self, l, x, ref):
        p = f"model.layers.{l}.mlp."
        gate, up = ref.linear(x, p + "gate_proj"), ref.linear(x, p + "up_proj")
        a0 = ref.act(gate) * up
        acts, down = self.mixlora_parts(l, x, gate, up, ref)
        G = self.gates(l, x)
        act = a0 + (acts - G.sum(-1, keepdim=True) * a0)
        return ref.linear(act, p + "down_proj") + down
