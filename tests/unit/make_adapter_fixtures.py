#!/usr/bin/python3
"""Writes the adapters the adapter unit tests load: valid ones and broken ones (truncated archive,
wrong shapes, NaN weights, unknown strategy, a pickle with a foreign global, ...).

  make_adapter_fixtures.py --model DIR --out DIR
"""

import argparse
import json
import os
import pickle
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import adapters  # noqa: E402
import gguf  # noqa: E402  (tools/modelgen, on the path adapters.py sets)
import make_adapter  # noqa: E402
import hostile_checkpoints  # noqa: E402


class Pwned:
    """A pickle payload: unpickling it would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/switchyard-pwned",))


def edit_config(folder, **changes):
    path = os.path.join(folder, "adapter_config.json")
    with open(path) as f:
        c = json.load(f)
    c.update(changes)
    with open(path, "w") as f:
        json.dump(c, f)


def edit_bin(folder, fn):
    path = os.path.join(folder, "adapter_model.bin")
    state = torch.load(path)
    fn(state)
    torch.save(state, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        base = json.load(f)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    mk = lambda name, family, **kw: adapters.make_adapter(os.path.join(out, name), base, family,
                                                          seed=len(os.listdir(out)), **kw)
    mk("mixlora", "mixlora", fmt="bin", experts=4)
    mk("lora", "lora", fmt="safetensors", r=4)
    # The same LoRA as llama.cpp's converter writes it: a single file, and in a folder of its own.
    gguf.convert_lora(os.path.join(out, "lora"), args.model, os.path.join(out, "lora.gguf"))
    os.makedirs(os.path.join(out, "lora_gguf"))
    shutil.copy(os.path.join(out, "lora.gguf"), os.path.join(out, "lora_gguf", "adapter_model.gguf"))
    mk("loramoe", "loramoe", fmt="bin", experts=3)
    mk("mhmoe", "mhmoe", fmt="safetensors", experts=3, heads=2)

    # Broken ones.
    d = mk("truncated", "mixlora", fmt="bin")
    path = os.path.join(d, "adapter_model.bin")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) * 6 // 10])

    d = mk("wrong_shape", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__("mixlora.layers.0.mlp.gate_proj.experts.0.lora_A.weight",
                                        torch.zeros(8, base["hidden_size"] + 1)))

    def nan(s):
        s["mixlora.layers.1.mlp.up_proj.experts.2.lora_B.weight"][3, 1] = float("nan")
    d = mk("nan_weights", "mixlora", fmt="bin")
    edit_bin(d, nan)

    d = mk("unknown_strategy", "mixlora", fmt="bin")
    edit_config(d, routing_strategy="mixlora-magic")

    d = mk("unknown_peft_type", "lora", fmt="safetensors")
    edit_config(d, peft_type="PREFIX_TUNING")

    d = mk("foreign_global", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__("payload", Pwned()))

    d = mk("missing_router", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.pop("mixlora.layers.2.mlp.moe_gate.weight"))

    d = mk("unknown_tensor", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__("mixlora.layers.0.mlp.magnitude_vector", torch.ones(3)))

    d = mk("too_many_layers", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__(f"mixlora.layers.{base['num_hidden_layers']}.mlp.moe_gate.weight",
                                        torch.zeros(4, base["hidden_size"])))

    d = mk("expert_count", "mixlora", fmt="bin")
    edit_config(d, num_experts=5)

    d = mk("long_tensor", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__("mixlora.layers.0.mlp.moe_gate.weight",
                                        torch.zeros(4, base["hidden_size"], dtype=torch.int64)))

    d = mk("nested", "mixlora", fmt="bin")
    edit_bin(d, lambda s: s.__setitem__("inner", {"a": torch.zeros(2)}))

    d = os.path.join(out, "no_weights")
    os.makedirs(d)
    shutil.copy(os.path.join(out, "mixlora", "adapter_config.json"), d)

    # Crafted archives (hostile_checkpoints.py) behind a valid config: hostile_<case>.
    for case, data in hostile_checkpoints.cases().items():
        d = os.path.join(out, "hostile_" + case)
        os.makedirs(d)
        shutil.copy(os.path.join(out, "mixlora", "adapter_config.json"), d)
        with open(os.path.join(d, "adapter_model.bin"), "wb") as f:
            f.write(data)

    # A folder whose weights are a symlink leaving the folder tree (for the adapter root tests).
    d = os.path.join(out, "symlinked_weights")
    os.makedirs(d)
    shutil.copy(os.path.join(out, "mixlora", "adapter_config.json"), d)
    os.symlink(os.path.abspath(os.path.join(out, "mixlora", "adapter_model.bin")),
               os.path.join(d, "adapter_model.bin"))

    # Top-1 MixLoRA whose expert 3 can never be chosen (for the dead-expert metrics).
    mk("mixlora_dead", "mixlora", fmt="bin", experts=4, top_k=1, dead_expert=3)
    # Expert 3 a copy of expert 1 (for the expert diagnostics' redundant pairs).
    mk("mixlora_twin", "mixlora", fmt="safetensors", experts=4, top_k=2, duplicate_expert=(1, 3))

    # Routers over adapters (peft_type MIXTURE): a valid one, and ones the loader refuses.
    rt = lambda name, members, **kw: adapters.make_router_adapter(
        os.path.join(out, name), base, seed=len(os.listdir(out)), members=members, **kw)
    mixlora_ffn = ("mixlora", dict(experts=3, top_k=2))
    rt("router", [("a",) + mixlora_ffn, ("b",) + mixlora_ffn, ("c",) + mixlora_ffn])
    rt("router_attention",
       [("a",) + mixlora_ffn, ("b", "mixlora", dict(targets=["q_proj"] + adapters.MLP))])
    rt("router_mixed_blocks", [("a",) + mixlora_ffn, ("b", "lora", dict(r=4))])
    d = rt("router_escape", [("a",) + mixlora_ffn, ("b",) + mixlora_ffn])
    edit_config(d, members=["members/a", "../mixlora"])
    d = rt("router_nested", [("a",) + mixlora_ffn, ("b",) + mixlora_ffn])
    shutil.copytree(os.path.join(out, "router"), os.path.join(d, "members", "inner"))
    edit_config(d, members=["members/a", "members/inner"])
    d = rt("router_no_router", [("a",) + mixlora_ffn, ("b",) + mixlora_ffn])
    w = adapters.load_adapter_tensors(d)
    del w["mixture.layers.1.router.weight"]
    with open(os.path.join(d, "adapter_config.json")) as f:
        make_adapter.write(d, json.load(f), {k: v.numpy() for k, v in w.items()}, "safetensors")


if __name__ == "__main__":
    main()
