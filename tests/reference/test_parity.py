#!/usr/bin/python3
"""Engine vs the independent PyTorch reference (reference.py), for several model configurations
in F32, BF16 and F16: last-prompt-position logits within 1e-4, identical 32-token greedy
continuations, and the same results whether a sequence runs alone, in a ragged batch, or chunked
and mixed with other sequences' decode steps.

  test_parity.py --build-dir build
"""

import argparse
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
import reference  # noqa: E402

BUILD_DIR = os.path.join(ROOT, "build")
MAX_NEW = 32

# (name, make_model.py arguments)
CONFIGS = [
    ("llama-gqa-untied", ["--preset", "tiny", "--arch", "llama"]),
    ("llama-mha-tied-llama3rope", ["--preset", "tiny", "--arch", "llama", "--kv-heads", "4",
                                   "--tie", "--rope-scaling", "llama3", "--rope-theta",
                                   "500000"]),
    ("qwen2-bias-tied", ["--preset", "tiny", "--arch", "qwen2", "--tie", "--kv-heads", "1",
                         "--rope-theta", "1000000"]),
    ("mistral-window-linearrope", ["--preset", "tiny", "--arch", "mistral", "--sliding-window",
                                   "12", "--rope-scaling", "linear", "--shards", "3"]),
    ("llama-attention-bias-wide-heads", ["--preset", "tiny", "--arch", "llama", "--hidden", "96",
                                         "--heads", "2", "--kv-heads", "1", "--head-dim", "48",
                                         "--attention-bias"]),
]
DTYPES = ["f32", "bf16", "f16"]


def make_model(out, args, dtype, seed):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "modelgen", "make_model.py"),
                    "--out", out, "--dtype", dtype, "--seed", str(seed)] + args, check=True)


def prompts_for(vocab, seed):
    rng = np.random.default_rng(seed)
    # 300 tokens: more rows than the CPU's own matmul kernel takes, so oneDNN's path runs too.
    return [rng.integers(0, vocab, size=n).tolist() for n in (5, 17, 33, 300)]


class ParityTest(unittest.TestCase):
    maxDiff = None

    def check_config(self, name, args, dtype, seed):
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "model")
            make_model(folder, args, dtype, seed)
            ref = reference.ReferenceModel(folder)
            prompts = prompts_for(ref.config["vocab_size"], seed)
            request = os.path.join(tmp, "request.json")
            with open(request, "w") as f:
                json.dump({"prompts": prompts, "max_new_tokens": MAX_NEW, "chunk": 7}, f)
            proc = subprocess.run(
                [os.path.join(BUILD_DIR, "tests", "parity_driver"), "--model", folder,
                 "--request", request], capture_output=True, text=True)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            got = json.loads(proc.stdout)
            for i, prompt in enumerate(prompts):
                want_logits = ref.forward(prompt)[-1].numpy()
                want_tokens = ref.greedy(prompt, MAX_NEW)
                alone = got["alone"][i]
                diff = np.abs(np.array(alone["first_logits"], dtype=np.float32) - want_logits).max()
                self.assertLessEqual(diff, 1e-4, f"{name}/{dtype} prompt {i}: logits differ by {diff}")
                self.assertEqual(alone["tokens"], want_tokens, f"{name}/{dtype} prompt {i}: greedy")
                for mode in ("batched", "chunked"):
                    other = got[mode][i]
                    self.assertEqual(other["tokens"], alone["tokens"], f"{name}/{dtype} {mode} {i}")
                    # GEMMs of different row counts take different kernels (ours below 17 rows,
                    # oneDNN above), so summation order differs: F32 rounding relative to the
                    # logits' magnitude.
                    a = np.array(alone["first_logits"])
                    rel = np.abs(np.array(other["first_logits"]) - a).max() / max(1.0, np.abs(a).max())
                    self.assertLessEqual(rel, 1e-6, f"{name}/{dtype} {mode} {i}: {rel}")


def add_tests():
    for ci, (name, args) in enumerate(CONFIGS):
        for dtype in DTYPES:
            def test(self, name=name, args=args, dtype=dtype, seed=ci):
                self.check_config(name, args, dtype, seed)
            setattr(ParityTest, f"test_{name.replace('-', '_')}_{dtype}", test)


add_tests()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=BUILD_DIR)
    known, rest = parser.parse_known_args()
    BUILD_DIR = os.path.abspath(known.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
