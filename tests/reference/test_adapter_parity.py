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
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools", "modelgen"))
import adapters  # noqa: E402
import expert_reference  # noqa: E402
import gguf  # noqa: E402
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
# Each family also in the other on-disk format it ships in.
FIXTURES += [
    ("mixlora_dynamic_st", "mixlora-dynamic", "safetensors", dict(experts=4, top_p=0.75)),
    ("mixlora_switch_st", "mixlora-switch", "safetensors", dict(experts=3)),
    ("mlora_legacy_st", "mlora-legacy", "safetensors", dict(experts=3, top_k=2,
                                                           targets=adapters.MLP)),
    ("loramoe_st", "loramoe", "safetensors", dict(experts=3)),
    ("mola_st", "mola", "safetensors", dict(experts=3)),
    ("hydralora_bin", "hydralora", "bin", dict(experts=4)),
    ("loramoe_peft_st", "loramoe-peft", "safetensors", dict(experts=4)),
    ("lora_bin", "lora", "bin", dict(r=8)),
]
# A redundant pair (expert 3 a copy of expert 1, B halved) for the expert diagnostics.
FIXTURES += [("mixlora_twin", "mixlora", "safetensors", dict(experts=4, top_k=2,
                                                             duplicate_expert=(1, 3)))]
# On half-precision base models (what users run): one adapter of each family, against the
# reference with the LoRA factors rounded as the engine holds them there (BF16).
HALF_FIXTURES = ["mixlora", "mixlora_dynamic", "mixlora_switch", "loramoe", "mola", "hydralora",
                 "loramoe_peft", "lora_bin", "mhmoe"]
CROWD_FAMILIES = ["mixlora", "loramoe", "mola", "lora", "hydralora", "mhmoe", "mixlora-dynamic"]


class ParityBase(unittest.TestCase):
    """The F32 model: logits within 1e-4 of the reference. Subclasses set the model's dtype and
    fixtures; their test methods are attached at the end of this file."""
    maxDiff = None
    DTYPE = "f32"
    FIXTURE_SET = FIXTURES
    CROWD = 31
    LOGIT_TOL = 1e-4
    FACTOR_DTYPE = None  # how the engine holds LoRA factors on this base model
    TIE = 1e-6  # rows whose selection is this close to flipping may go either way
    QUANTIZATION = None  # (--quantization value, tools/modelgen/gguf.py type) of the base
    MIXTURES = []  # per-request mixtures [[name, weight], ...], prompted after the base prompt
    ROUTERS = []  # routers over adapters: (name, make_router_adapter options)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="adapter-parity-")
        cls.model = os.path.join(cls.tmp, "model")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "modelgen", "make_model.py"),
                        "--out", cls.model, "--preset", "tiny", "--dtype", cls.DTYPE, "--seed", "3",
                        "--kv-heads", "2", "--head-dim", "16", "--hidden", "64"], check=True)
        cls.ref = reference.ReferenceModel(cls.model)
        driver_flags = []
        if cls.QUANTIZATION:
            # The engine quantizes the base at load; the reference runs on the same values,
            # quantized and dequantized by numpy's copy of the quantizer.
            flag, type_name = cls.QUANTIZATION
            driver_flags = ["--quantization", flag]
            for name, w in list(cls.ref.w.items()):
                if w.dim() == 2:
                    q = gguf.decode(gguf.encode(w.numpy(), type_name), type_name, tuple(w.shape))
                    cls.ref.w[name] = torch.from_numpy(np.ascontiguousarray(q))
            cls.ref.lm_head = cls.ref.w["model.embed_tokens.weight"] if cls.ref.config.get(
                "tie_word_embeddings") else cls.ref.w["lm_head.weight"]
        base = cls.ref.config
        cls.dirs = {}
        for i, (name, family, fmt, opts) in enumerate(cls.FIXTURE_SET):
            cls.dirs[name] = adapters.make_adapter(os.path.join(cls.tmp, name), base, family,
                                                   seed=100 + i, fmt=fmt, **opts)
        crowd = []
        for i in range(cls.CROWD):
            name = f"crowd{i}"
            family = CROWD_FAMILIES[i % len(CROWD_FAMILIES)]
            cls.dirs[name] = adapters.make_adapter(os.path.join(cls.tmp, name), base, family,
                                                   seed=1000 + i, fmt="safetensors",
                                                   experts=3 + i % 3, r=4 + 4 * (i % 3))
            crowd.append(name)
        rng = np.random.default_rng(5)
        for i, (name, opts) in enumerate(cls.ROUTERS):
            cls.dirs[name] = adapters.make_router_adapter(os.path.join(cls.tmp, name), base,
                                                          seed=500 + i, **opts)
        cls.names = ([f[0] for f in cls.FIXTURE_SET] + [None] + [r[0] for r in cls.ROUTERS] +
                     cls.MIXTURES)
        cls.prompts = [rng.integers(0, base["vocab_size"], size=int(n)).tolist()
                       for n in rng.integers(6, 30, size=len(cls.names))]
        job = os.path.join(cls.tmp, "request.json")
        with open(job, "w") as f:
            json.dump({"prompts": cls.prompts, "prompt_adapters": cls.names,
                       "adapters": cls.dirs, "max_new_tokens": MAX_NEW, "chunk": 5,
                       **({"crowd": crowd} if crowd else {})}, f)
        proc = subprocess.run([os.path.join(BUILD_DIR, "tests", "parity_driver"), "--model",
                               cls.model, "--request", job] + driver_flags,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("parity_driver failed: " + proc.stderr[-3000:])
        cls.got = json.loads(proc.stdout)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def hooks(self, name):
        if not name:
            return None
        kind = (adapters.RouterReference if name in dict(self.ROUTERS) else
                adapters.AdapterReference)
        return kind(self.dirs[name], self.ref.config, self.FACTOR_DTYPE)

    def check(self, i):
        name = self.names[i]
        prompt = self.prompts[i]
        hooks = self.hooks(name)
        want_logits = self.ref.forward(prompt, hooks)[-1].numpy()
        want_stats = copy.deepcopy(hooks.stats) if hooks else None
        # Rows whose reference selection is within 1e-6 of flipping are left out: F32 rounding
        # order may decide them either way (there must be almost none).
        decided = [d for d in hooks.decisions if d[5] >= self.TIE] if hooks else []
        close = {tuple(d[:4]) for d in hooks.decisions if d[5] < self.TIE} if hooks else set()
        if hooks:
            self.assertLessEqual(len(close), 0.02 * len(hooks.decisions) + 1, f"{name}: near-ties")
        want_decisions = sorted(list(d[:4]) + [d[4]] for d in decided)
        want_tokens = self.ref.greedy(prompt, MAX_NEW, hooks)
        alone = self.got["alone"][i]
        diff = np.abs(np.array(alone["first_logits"], dtype=np.float32) - want_logits).max()
        self.assertLessEqual(diff, self.LOGIT_TOL,
                             f"{name}: logits differ from the reference by {diff}")
        if name:  # every fixture must move the logits, or the checks above prove nothing
            base = np.array(self.got["alone"][self.names.index(None)]["first_logits"])
            moved = np.abs(np.array(alone["first_logits"]) - base).max()
            self.assertGreater(moved, 1e-3, f"{name}: the adapter does not change the logits")
        self.assertEqual(alone["tokens"], want_tokens, f"{name}: greedy continuation")
        got_decisions = sorted(d for d in alone["decisions"] if tuple(d[:4]) not in close)
        self.assertEqual(len(got_decisions), len(want_decisions), f"{name}: routed rows")
        self.assertEqual(got_decisions, want_decisions, f"{name}: routing decisions")
        if hooks:
            self.check_stats(name, want_stats, alone["routing_stats"], close)
        if hooks:
            self.check_all_decisions(name, prompt, alone["tokens"])
        self.check_batch_invariance(i, name)

    def check_batch_invariance(self, i, label):
        """Prompt i gets its alone tokens and logits in the ragged batch and chunked."""
        alone = self.got["alone"][i]
        for mode in ("batched", "chunked"):
            other = self.got[mode][i]
            self.assertEqual(other["tokens"], alone["tokens"], f"{label} {mode}: tokens")
            a = np.array(alone["first_logits"])
            rel = np.abs(np.array(other["first_logits"]) - a).max() / max(1.0, np.abs(a).max())
            # F32 rounding varies with the batch's shape (GEMM blocking): bounded as for the crowd.
            self.assertLessEqual(rel, 1e-5, f"{label} {mode}: logits moved by {rel}")

    def mixture_hooks(self, spec):
        return adapters.MixtureReference([(self.hooks(n), w) for n, w in spec])

    def check_mixture(self, j):
        """A request mixing adapters (or scaling one): logits within 1e-4 of the reference's
        mixture, its greedy continuation, and each member's routing decisions and statistics as
        the reference's member routed them; unchanged in the ragged batch with every other
        adapter and chunked."""
        spec = self.MIXTURES[j]
        i = self.names.index(spec)
        prompt = self.prompts[i]
        hooks = self.mixture_hooks(spec)
        want_logits = self.ref.forward(prompt, hooks)[-1].numpy()
        alone = self.got["alone"][i]
        got_logits = np.array(alone["first_logits"], dtype=np.float32)
        diff = np.abs(got_logits - want_logits).max()
        self.assertLessEqual(diff, self.LOGIT_TOL, f"{spec}: logits differ by {diff}")
        # The mixture is none of its members alone (each would move the logits elsewhere).
        for name, _ in spec:
            alone_member = self.ref.forward(prompt, self.hooks(name))[-1].numpy()
            self.assertGreater(np.abs(got_logits - alone_member).max(), 1e-3, f"{spec}: {name}")
        for k, (name, _) in enumerate(spec):
            member = hooks.members[k][0]
            close = {tuple(d[:4]) for d in member.decisions if d[5] < self.TIE}
            want = sorted(list(d[:4]) + [d[4]] for d in member.decisions if d[5] >= self.TIE)
            got = sorted(d[:5] for d in alone["decisions"]
                         if d[5] == k and tuple(d[:4]) not in close)
            self.assertEqual(got, want, f"{spec}: member {name}'s routing decisions")
            got_stats = [g for g in alone["routing_stats"] if g["adapter"] == name]
            self.check_stats(f"{spec} {name}", member.stats, got_stats, close)
        self.assertEqual(alone["tokens"], self.ref.greedy(prompt, MAX_NEW, self.mixture_hooks(spec)),
                         f"{spec}: greedy continuation")
        self.check_batch_invariance(i, spec)

    def check_all_decisions(self, name, prompt, tokens):
        """Every position the engine routed (prefill chunks and decode steps; alone, in one ragged
        batch with every other adapter, and chunked and staggered) selects the experts the
        reference selects over the whole sequence, near-ties aside."""
        hooks = self.hooks(name)
        self.ref.forward(prompt + tokens[:-1], hooks)
        close = {tuple(d[:4]) for d in hooks.decisions if d[5] < self.TIE}
        want = sorted(list(d[:4]) + [d[4]] for d in hooks.decisions if d[5] >= self.TIE)
        i = self.names.index(name)
        for mode in ("alone", "batched", "chunked"):
            got = sorted(d for d in self.got[mode][i]["all_decisions"] if tuple(d[:4]) not in close)
            self.assertEqual(len(got), len(want), f"{name} {mode}: routed rows over all steps")
            self.assertEqual(got, want, f"{name} {mode}: routing decisions over all steps")

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

    def check_crowd(self):
        a = np.array(self.got["alone"][0]["first_logits"])
        c = np.array(self.got["crowd"]["first_logits"])
        self.assertLessEqual(np.abs(a - c).max(), 1e-5)
        self.assertEqual(self.got["crowd"]["tokens"], self.got["alone"][0]["tokens"])


class AdapterParityTest(ParityBase):
    # Members carry LoRA on the FFN only (the router reads the FFN input).
    ROUTERS = [
        ("router_topk", dict(members=[("a", "mixlora", dict(experts=4, top_k=2)),
                                      ("b", "mixlora", dict(experts=3, top_k=1)),
                                      ("c", "mixlora-dynamic", dict(experts=4)),
                                      ("d", "mixlora-switch", dict(experts=3))],
                             routing="topk", top_k=2)),
        ("router_dense", dict(members=[("lora", "lora", dict(r=8)),
                                       ("hydra", "hydralora", dict(experts=3)),
                                       ("peft", "loramoe-peft", dict(experts=2))],
                              routing="dense")),
    ]
    MIXTURES = [
        [["mixlora", 0.6], ["loramoe", 0.4]],  # a MixLoRA block beside dense routed sites
        [["mola", 1.5]],  # one adapter with a scale
        # Two MixLoRA members (the base activation kept at 1 - 1.2) and a plain LoRA, negated.
        [["mixlora_switch", 0.5], ["mixlora_dynamic", 0.7], ["lora_bin", -0.3]],
        [["mhmoe", 0.5], ["hydralora", 0.5]],  # head split and merge beside a shared A
        # A router over adapters beside an adapter and beside a MixLoRA block.
        [["router_topk", 0.7], ["lora_bin", 0.3]],
        [["router_dense", 0.5], ["mixlora", 0.5]],
    ]

    def test_expert_diagnostics_match_numpy(self):
        """Every fixture's similarity, norms, effective ranks and router norms (the engine's, via
        r x r products) equal numpy's on the full deltas; the twin fixture's pair is at 1."""
        for name, _, _, _ in self.FIXTURE_SET + [(c, 0, 0, 0) for c in self.dirs
                                                 if c.startswith("crowd")]:
            want = expert_reference.site_deltas(self.dirs[name])
            got = {(d["layer"], d["site"]): d for d in self.got["diagnostics"][name]}
            self.assertEqual(sorted(got), sorted(want), f"{name}: sites")
            for key, w in want.items():
                where = f"{name} layer {key[0]} {key[1]}"
                g = got[key]
                sim, norms, ranks = expert_reference.diagnose(w["experts"])
                E = len(w["experts"])
                self.assertEqual(g["experts"], E, where)
                np.testing.assert_allclose(np.array(g["similarity"]).reshape(E, E), sim,
                                           atol=2e-5, err_msg=where + ": similarity")
                np.testing.assert_allclose(g["norm"], norms, rtol=1e-5, err_msg=where + ": norm")
                np.testing.assert_allclose(g["effective_rank"], ranks, rtol=1e-4,
                                           err_msg=where + ": effective rank")
                if w["router"] is None:
                    self.assertEqual(g["router_norm"], [], where)
                else:
                    np.testing.assert_allclose(g["router_norm"], np.linalg.norm(w["router"], axis=1),
                                               rtol=1e-6, err_msg=where + ": router norms")
        twin = {(d["layer"], d["site"]): d for d in self.got["diagnostics"]["mixlora_twin"]}
        for (layer, site), d in twin.items():
            if site.startswith("ffn."):
                self.assertAlmostEqual(d["similarity"][1 * 4 + 3], 1.0, places=5, msg=site)
                self.assertAlmostEqual(d["norm"][3], d["norm"][1] / 2, places=5, msg=site)


class Bf16ModelParityTest(ParityBase):
    """A BF16 model (the demo's dtype): adapters held in BF16 on it, as the reference rounds them;
    F32 math otherwise, so the same 1e-4 bound holds."""
    DTYPE = "bf16"
    FIXTURE_SET = [f for f in FIXTURES if f[0] in HALF_FIXTURES]
    CROWD = 0
    FACTOR_DTYPE = torch.bfloat16


class F16ModelParityTest(Bf16ModelParityTest):
    DTYPE = "f16"


class Int8BaseParityTest(Bf16ModelParityTest):
    """An F32 model quantized to Q8_0 at load: adapters (BF16 factors) ride on the quantized
    projections, MixLoRA's shared down projection included."""
    DTYPE = "f32"
    QUANTIZATION = ("int8", "q8_0")


for _cls in (AdapterParityTest, Bf16ModelParityTest, F16ModelParityTest, Int8BaseParityTest):
    for _i, _f in enumerate(_cls.FIXTURE_SET + [("base", None, None, None)]):
        setattr(_cls, f"test_{_f[0]}", lambda self, i=_i: self.check(i))
AdapterParityTest.test_crowd_of_31_other_adapters_changes_nothing = ParityBase.check_crowd
for _r, _ in AdapterParityTest.ROUTERS:
    setattr(AdapterParityTest, f"test_{_r}",
            lambda self, r=_r: self.check(self.names.index(r)))
for _j, _m in enumerate(AdapterParityTest.MIXTURES):
    _name = "_".join(f"{n}_{w}".replace(".", "p").replace("-", "m") for n, w in _m)
    setattr(AdapterParityTest, f"test_mixture_{_name}", lambda self, j=_j: self.check_mixture(j))
del ParityBase  # not a test case of its own

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=BUILD_DIR)
    known, rest = parser.parse_known_args()
    BUILD_DIR = os.path.abspath(known.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
