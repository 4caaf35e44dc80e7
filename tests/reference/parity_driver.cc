// Runs the engine over prompts in three ways and prints JSON for tests/reference/test_parity.py:
//   alone:   each prompt prefilled in one step, then greedy-decoded on its own;
//   batched: all prompts prefilled in one ragged step, then decoded together;
//   chunked: prompts prefilled in chunks, staggered, mixed with the others' decode tokens.
// For each prompt: the logits after its last prompt token and the greedy continuation; alone, also
// the routing decisions and routing statistics of its prefill. With "crowd", the first prompt also
// runs beside 31 others that each use a different adapter. Every adapter's expert diagnostics
// come with the results.
//
//   parity_driver --model DIR|FILE.gguf [--quantization int8|int4] --request FILE.json
//   FILE.json: {"prompts": [[ids...], ...], "max_new_tokens": 32, "chunk": 7,
//               "adapters": {name: dir},
//               "prompt_adapters": [name | null | [[name, weight], ...] (a mixture), ...],
//               "crowd": [name, ...]}
// A mixture's decisions carry the member's index as a sixth element; routing statistics name
// their adapter.

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/core/json_util.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "engine/sampling/sampler.h"

ABSL_FLAG(std::string, model, "", "model folder or .gguf file");
ABSL_FLAG(std::string, quantization, "none", "none, int8 or int4 (quantize at load)");
// F32 activations and an F32 KV cache by default: the reference comparisons are then exact up to
// F32 rounding. test_gguf.py checks int8 activations against a reference that rounds them alike.
ABSL_FLAG(std::string, quantized_activations, "f32", "int8 or f32");
ABSL_FLAG(std::string, kv_cache_dtype, "f32", "auto, f32, bf16 or f16");
ABSL_FLAG(std::string, request, "", "request JSON file");

namespace switchyard {
namespace {

struct Sequence {
  std::vector<int32_t> prompt;
  const AdapterWeights* adapter = nullptr;
  std::vector<AdapterMember> mixture;
  nlohmann::json decisions = nlohmann::json::array();
  nlohmann::json routing_stats = nlohmann::json::array();
  std::vector<int32_t> generated;
  std::vector<int32_t> blocks;
  int64_t cached = 0;  // tokens already in the KV cache
  std::vector<float> first_logits;
  // Every routing decision of every step (prefill chunks and decodes, alone or batched):
  // [position, layer, site, head, experts].
  nlohmann::json all_decisions = nlohmann::json::array();
  std::unique_ptr<Sampler> sampler;
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "parity_driver: %s\n", s.ToString().c_str());
  return 1;
}

// Runs until every sequence has max_new tokens; `plan` picks each step's tokens per sequence.
absl::Status Run(Engine& engine, std::vector<Sequence>& seqs, int max_new, int chunk,
                 bool stagger) {
  BlockPool pool(engine.num_kv_blocks());
  for (Sequence& s : seqs) {
    const int64_t need = static_cast<int64_t>(s.prompt.size()) + max_new;
    if (!pool.Allocate(static_cast<int>((need + engine.block_size() - 1) / engine.block_size()),
                       &s.blocks)) {
      return absl::ResourceExhaustedError("KV cache too small for the test");
    }
    SamplingParams greedy;
    greedy.temperature = 0;
    s.sampler = std::make_unique<Sampler>(greedy, s.prompt, 0);
  }
  for (int step = 0;; ++step) {
    StepBatch batch;
    std::vector<Sequence*> wanting;
    std::vector<std::pair<Sequence*, int64_t>> token_at;  // step token -> (sequence, position)
    for (size_t i = 0; i < seqs.size(); ++i) {
      Sequence& s = seqs[i];
      if (stagger && static_cast<int>(i) > step) continue;
      if (static_cast<int>(s.generated.size()) >= max_new) continue;
      const int64_t prompt_len = static_cast<int64_t>(s.prompt.size());
      StepSequence ss;
      ss.first_position = s.cached;
      ss.block_table = s.blocks;
      ss.adapter = s.adapter;
      ss.mixture = s.mixture;
      if (s.cached < prompt_len) {
        const int64_t n =
            chunk > 0 ? std::min<int64_t>(chunk, prompt_len - s.cached) : prompt_len - s.cached;
        batch.tokens.insert(batch.tokens.end(), s.prompt.begin() + s.cached,
                            s.prompt.begin() + s.cached + n);
        ss.num_tokens = n;
        ss.want_logits = s.cached + n == prompt_len;
      } else {
        batch.tokens.push_back(s.generated.back());
        ss.num_tokens = 1;
        ss.want_logits = true;
      }
      for (int64_t t = 0; t < ss.num_tokens; ++t) token_at.emplace_back(&s, s.cached + t);
      s.cached += ss.num_tokens;
      batch.sequences.push_back(ss);
      if (ss.want_logits) wanting.push_back(&s);
    }
    if (batch.sequences.empty()) break;
    absl::StatusOr<StepOutput> out = engine.Step(batch);
    if (!out.ok()) return out.status();
    const auto decision = [](const Sequence& s, int64_t position, const RoutingDecision& d) {
      nlohmann::json j = {position, d.layer, d.site, d.head, d.experts};
      if (!s.mixture.empty()) j.push_back(d.member);
      return j;
    };
    // A router over adapters' decisions are its own (members as experts); its members' are left
    // out.
    for (const RoutingDecision& d : out->routing.decisions) {
      if (d.gated_member >= 0) continue;
      const auto& [seq, position] = token_at[static_cast<size_t>(d.token)];
      seq->all_decisions.push_back(decision(*seq, position, d));
    }
    // Routing decisions of a lone sequence's prefill: step token index = prompt position.
    if (seqs.size() == 1 && step == 0) {
      for (const RoutingDecision& d : out->routing.decisions) {
        if (d.gated_member < 0) seqs[0].decisions.push_back(decision(seqs[0], d.token, d));
      }
      for (const AdapterRoutingStats& a : out->routing.adapters) {
        for (const SiteRoutingStats& st : a.sites) {
          seqs[0].routing_stats.push_back({{"adapter", a.adapter},
                                           {"layer", st.layer},
                                           {"site", st.site},
                                           {"tokens", st.tokens},
                                           {"selections", st.selections},
                                           {"gate_sum", st.gate_sum},
                                           {"prob_sum", st.prob_sum},
                                           {"entropy_sum", st.entropy_sum},
                                           {"z_sum", st.z_sum},
                                           {"experts_per_token", st.experts_per_token}});
        }
      }
    }
    for (size_t r = 0; r < wanting.size(); ++r) {
      Sequence& s = *wanting[r];
      const float* row = out->logits.data<float>() + r * out->logits.dim(1);
      std::span<const float> logits(row, static_cast<size_t>(out->logits.dim(1)));
      if (s.generated.empty()) s.first_logits.assign(logits.begin(), logits.end());
      s.generated.push_back(s.sampler->Sample(logits).token);
    }
  }
  return absl::OkStatus();
}

int Main() {
  absl::StatusOr<std::string> text = ReadFile(absl::GetFlag(FLAGS_request));
  if (!text.ok()) return Fail(text.status());
  absl::StatusOr<nlohmann::json> req = json_util::Parse(*text, "request");
  if (!req.ok()) return Fail(req.status());
  EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  if (absl::Status s = ParseNumerics(absl::GetFlag(FLAGS_quantization),
                                     absl::GetFlag(FLAGS_quantized_activations),
                                     absl::GetFlag(FLAGS_kv_cache_dtype), &options);
      !s.ok()) {
    return Fail(s);
  }
  options.kv_cache_bytes = int64_t{64} << 20;
  options.block_size = 8;
  options.moe_lora.record_decisions = true;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  if (!engine.ok()) return Fail(engine.status());
  const int max_new = (*req)["max_new_tokens"].get<int>();
  const int chunk = req->value("chunk", 7);

  std::map<std::string, std::unique_ptr<AdapterWeights>> adapters;
  const nlohmann::json adapter_dirs = req->value("adapters", nlohmann::json::object());
  for (const auto& [name, dir] : adapter_dirs.items()) {
    auto a = (*engine)->LoadAdapter(dir.get<std::string>());
    if (!a.ok()) return Fail(a.status());
    (*a)->name = name;
    adapters[name] = std::move(*a);
  }
  const auto adapter_named = [&](const nlohmann::json& n) -> const AdapterWeights* {
    return n.is_string() ? adapters.at(n.get<std::string>()).get() : nullptr;
  };

  nlohmann::json result;
  const auto fresh = [&] {
    std::vector<Sequence> seqs;
    const nlohmann::json names = req->value("prompt_adapters", nlohmann::json::array());
    size_t i = 0;
    for (const auto& p : (*req)["prompts"]) {
      Sequence s;
      s.prompt = p.get<std::vector<int32_t>>();
      if (i < names.size() && names[i].is_array()) {
        for (const auto& m : names[i])
          s.mixture.push_back({adapter_named(m[0]), m[1].get<float>()});
      } else if (i < names.size()) {
        s.adapter = adapter_named(names[i]);
      }
      seqs.push_back(std::move(s));
      ++i;
    }
    return seqs;
  };
  const auto record = [](const std::vector<Sequence>& seqs) {
    nlohmann::json arr = nlohmann::json::array();
    for (const Sequence& s : seqs) {
      arr.push_back({{"first_logits", s.first_logits},
                     {"tokens", s.generated},
                     {"decisions", s.decisions},
                     {"all_decisions", s.all_decisions},
                     {"routing_stats", s.routing_stats}});
    }
    return arr;
  };
  {
    nlohmann::json alone = nlohmann::json::array();
    for (auto& s : fresh()) {
      std::vector<Sequence> one;
      one.push_back(std::move(s));
      if (absl::Status st = Run(**engine, one, max_new, 0, false); !st.ok()) return Fail(st);
      alone.push_back(record(one)[0]);
    }
    result["alone"] = alone;
  }
  {
    std::vector<Sequence> seqs = fresh();
    if (absl::Status st = Run(**engine, seqs, max_new, 0, false); !st.ok()) return Fail(st);
    result["batched"] = record(seqs);
  }
  {
    std::vector<Sequence> seqs = fresh();
    if (absl::Status st = Run(**engine, seqs, max_new, chunk, true); !st.ok()) return Fail(st);
    result["chunked"] = record(seqs);
  }
  if (req->contains("crowd")) {
    // The first prompt beside one sequence per crowd adapter (each reuses the first prompt).
    std::vector<Sequence> seqs;
    seqs.push_back(std::move(fresh()[0]));
    for (const auto& name : (*req)["crowd"]) {
      Sequence s;
      s.prompt = seqs[0].prompt;
      s.adapter = adapter_named(name);
      seqs.push_back(std::move(s));
    }
    if (absl::Status st = Run(**engine, seqs, max_new, 0, false); !st.ok()) return Fail(st);
    result["crowd"] = record(seqs)[0];
  }
  // Each adapter's expert diagnostics, for test_adapter_parity.py's numpy check.
  for (const auto& [name, a] : adapters) {
    nlohmann::json sites = nlohmann::json::array();
    for (const SiteDiagnostics& d : a->diagnostics->sites) {
      sites.push_back({{"layer", d.layer},
                       {"site", d.site},
                       {"experts", d.experts},
                       {"rank", d.rank},
                       {"norm", d.norm},
                       {"effective_rank", d.effective_rank},
                       {"similarity", d.similarity},
                       {"router_norm", d.router_norm}});
    }
    result["diagnostics"][name] = std::move(sites);
  }
  result["engine"] = (*engine)->Describe();
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}
