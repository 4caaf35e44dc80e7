#!/usr/bin/python3
"""MoE-LoRA adapters: the engine against the independent PyTorch reference (adapters.py), for
every family and on-disk format. Per adapter: logits after the prompt within 1e-4, identical greedy
continuations, identical routing decisions (selected experts per token, layer and site); the same
results alone, in one ragged batch of many adapters, chunked and interleaved; and a request's
logits unchanged (<= 1e-5) when it runs beside 31 requests of 31 other adapters.

  test_adapter_parity.py --build-dir build
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import adapters  # noqa: E402
import reference  # noqa: E402

BUILD_DIR = os.path.join(ROOT, "build")
MAX_NEW = 12

# name, family, format, options
FIXTURES = [
    ("mixlora", "mixlora", "bin", dict(experts=4, top_k=2, expert_r=4)),
    ("mixlora_rslora_gelu", "mixlora", "safetensors",
     dict(experts=3, top_k=2, rslora=True, act_fn="gelu_pytorch_tanh",
          targets=["q_proj", "v_proj", "gate_proj", "down_proj"])),
    ("mixlora_dynamic", "mixlora-dynamic", "bin", dict(experts=5, top_p=0.7)),
    ("mixlora_dynamic_temp", "mixlora-dynamic", "bin", dict(experts=4, top_p=0.8, temperature=0.9)),
    ("mixlora_switch", "mixlora-switch", "bin", dict(experts=4)),
    ("mlora_legacy", "mlora-legacy", "bin", dict(experts=4, top_k=2, targets=adapters.MLP)),
    ("loramoe", "loramoe", "bin", dict(experts=4)),
    ("mola", "mola", "bin", dict(experts=4)),
    ("hydralora", "hydralora", "safetensors", dict(experts=3)),
    ("loramoe_peft", "loramoe-peft", "bin", dict(experts=3)),
    ("lora_bf16_rslora", "lora", "safetensors-bf16", dict(r=16, alpha=8, rslora=True)),
    ("mhmoe", "mhmoe", "safetensors", dict(experts=4, top_k=2, heads=2, head_rank=4, merge_rank=4)),
    ("mhmoe_plain", "mhmoe", "bin", dict(experts=3, top_k=1, heads=4)),
]
CROWD_FAMILIES = ["mixlora", "loramoe", "mola", "lora", "hydralora", "mhmoe", "mixlora-dynamic"]


class AdapterParityTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="adapter-parity-")
        cls.model = os.path.join(cls.tmp, "model")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "modelgen", "make_model.py"),
                        "--out", cls.model, "--preset", "tiny", "--dtype", "f32", "--seed", "3",
                        "--kv-heads", "2", "--head-dim", "16", "--hidden", "64"], check=True)
        cls.ref = reference.ReferenceModel(cls.model)
        base = cls.ref.config
        cls.dirs = {}
        for i, (name, family, fmt, opts) in enumerate(FIXTURES):
            cls.dirs[name] = adapters.make_adapter(os.path.join(cls.tmp, name), base, family,
                                                   seed=100 + i, fmt=fmt, **opts)
        crowd = []
        for i in range(31):
            name = f"crowd{i}"
            family = CROWD_FAMILIES[i % len(CROWD_FAMILIES)]
            cls.dirs[name] = adapters.make_adapter(os.path.join(cls.tmp, name), base, family,
                                                   seed=1000 + i, fmt="safetensors",
                                                   experts=3 + i % 3, r=4 + 4 * (i % 3))
            crowd.append(name)
        rng = np.random.default_rng(5)
        cls.prompts = [rng.integers(0, base["vocab_size"], size=int(n)).tolist()
                       for n in rng.integers(6, 30, size=len(FIXTURES) + 1)]
        cls.names = [f[0] for f in FIXTURES] + [None]
        job = os.path.join(cls.tmp, "request.json")
        with open(job, "w") as f:
            json.dump({"prompts": cls.prompts, "prompt_adapters": cls.names,
                       "adapters": cls.dirs, "max_new_tokens": MAX_NEW, "chunk": 5,
                       "crowd": crowd}, f)
        proc = subprocess.run([os.path.join(BUILD_DIR, "tests", "parity_driver"), "--model",
                               cls.model, "--request", job], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("parity_driver failed: " + proc.stderr[-3000:])
        cls.got = json.loads(proc.stdout)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, i):
        name = self.names[i]
        prompt = self.prompts[i]
        hooks = adapters.AdapterReference(self.dirs[name], self.ref.config) if name else None
        want_logits = self.ref.forward(prompt, hooks)[-1].numpy()
        want_stats = copy.deepcopy(hooks.stats) if hooks else None
        # Rows whose reference selection is within 1e-6 of flipping are left out: F32 rounding
        # order may decide them either way (there must be almost none).
        decided = [d for d in hooks.decisions if d[5] >= 1e-6] if hooks else []
        close = {tuple(d[:4]) for d in hooks.decisions if d[5] < 1e-6} if hooks else set()
        if hooks:
            self.assertLessEqual(len(close), 0.02 * len(hooks.decisions) + 1, f"{name}: near-ties")
        want_decisions = sorted(list(d[:4]) + [d[4]] for d in decided)
        want_tokens = self.ref.greedy(prompt, MAX_NEW, hooks)
        alone = self.got["alone"][i]
        diff = np.abs(np.array(alone["first_logits"], dtype=np.float32) - want_logits).max()
        self.assertLessEqual(diff, 1e-4, f"{name}: logits differ from the reference by {diff}")
        self.assertEqual(alone["tokens"], want_tokens, f"{name}: greedy continuation")
        got_decisions = sorted(d for d in alone["decisions"] if tuple(d[:4]) not in close)
        self.assertEqual(len(got_decisions), len(want_decisions), f"{name}: routed rows")
        self.assertEqual(got_decisions, want_decisions, f"{name}: routing decisions")
        if hooks:
            self.check_stats(name, want_stats, alone["routing_stats"], close)
        for mode in ("batched", "chunked"):
            other = self.got[mode][i]
            self.assertEqual(other["tokens"], alone["tokens"], f"{name} {mode}: tokens")
            a = np.array(alone["first_logits"])
            rel = np.abs(np.array(other["first_logits"]) - a).max() / max(1.0, np.abs(a).max())
            self.assertLessEqual(rel, 1e-6, f"{name} {mode}: logits moved by {rel}")

    def check_stats(self, name, want_stats, got_stats, close):
        """The engine's routing statistics of the prefill step equal the reference's sums."""
        got = {(g["layer"], g["site"]): g for g in got_stats}
        self.assertEqual(sorted(got), sorted(want_stats), f"{name}: routed sites")
        for key, want in want_stats.items():
            g = got[key]
            where = f"{name} layer {key[0]} site {key[1]}"
            self.assertEqual(g["tokens"], want["tokens"], where)
            # A near-tie row may select differently (see check); each moves at most two counts.
            ties = sum(1 for c in close if (c[1], c[2]) == key)
            moved = sum(abs(a - b) for a, b in zip(g["selections"], want["selections"]))
            self.assertLessEqual(moved, 2 * ties, f"{where}: selections {g['selections']} "
                                 f"vs {want['selections']}")
            if ties == 0:
                self.assertEqual(g["experts_per_token"], want["experts_per_token"], where)
                np.testing.assert_allclose(g["gate_sum"], want["gate_sum"], rtol=1e-4, atol=1e-4,
                                           err_msg=where + ": gate sums")
            np.testing.assert_allclose(g["prob_sum"], want["prob_sum"], rtol=1e-4, atol=1e-4,
                                       err_msg=where + ": probability sums")
            np.testing.assert_allclose(g["entropy_sum"], want["entropy_sum"], rtol=1e-4,
                                       atol=1e-4, err_msg=where + ": entropy")
            np.testing.assert_allclose(g["z_sum"], want["z_sum"], rtol=1e-4, atol=1e-4,
                                       err_msg=where + ": z")

    def test_crowd_of_31_other_adapters_changes_nothing(self):
        a = np.array(self.got["alone"][0]["first_logits"])
        c = np.array(self.got["crowd"]["first_logits"])
        self.assertLessEqual(np.abs(a - c).max(), 1e-5)
        self.assertEqual(self.got["crowd"]["tokens"], self.got["alone"][0]["tokens"])


for _i, _f in enumerate(FIXTURES + [("base", None, None, None)]):
    setattr(AdapterParityTest, f"test_{_f[0]}", lambda self, i=_i: self.check(i))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=BUILD_DIR)
    known, rest = parser.parse_known_args()
    BUILD_DIR = os.path.abspath(known.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
