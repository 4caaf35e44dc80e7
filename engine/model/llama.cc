#include "engine/model/llama.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard {

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelConfig& config,
                                                               ModelWeights weights,
                                                               Backend* backend, int64_t max_tokens,
                                                               int64_t max_logit_rows) {
  if (max_tokens <= 0 || max_logit_rows <= 0) {
    return absl::InvalidArgumentError("max_tokens and max_logit_rows must be positive");
  }
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, std::move(weights), backend));
  model->max_tokens_ = max_tokens;
  model->max_logit_rows_ = max_logit_rows;
  SY_RETURN_IF_ERROR(model->AllocateWorkspace());
  return model;
}

absl::Status LlamaModel::AllocateWorkspace() {
  const ModelConfig& c = config_;
  const int64_t T = max_tokens_, d = c.hidden_size, hd = c.head_dim;
  const int64_t qw = c.num_heads * hd, kvw = c.num_kv_heads * hd, F = c.intermediate_size;
  Backend& b = *backend_;
  SY_ASSIGN_OR_RETURN(ws_.hidden, b.Allocate(DType::kF32, {T, d}));
  SY_ASSIGN_OR_RETURN(ws_.normed, b.Allocate(DType::kF32, {T, d}));
  SY_ASSIGN_OR_RETURN(ws_.qkv, b.Allocate(DType::kF32, {T, qw + 2 * kvw}));
  SY_ASSIGN_OR_RETURN(ws_.q, b.Allocate(DType::kF32, {T, qw}));
  SY_ASSIGN_OR_RETURN(ws_.k, b.Allocate(DType::kF32, {T, kvw}));
  SY_ASSIGN_OR_RETURN(ws_.v, b.Allocate(DType::kF32, {T, kvw}));
  SY_ASSIGN_OR_RETURN(ws_.attn, b.Allocate(DType::kF32, {T, qw}));
  SY_ASSIGN_OR_RETURN(ws_.gate_up, b.Allocate(DType::kF32, {T, 2 * F}));
  SY_ASSIGN_OR_RETURN(ws_.act, b.Allocate(DType::kF32, {T, F}));
  SY_ASSIGN_OR_RETURN(ws_.cos_sin, b.Allocate(DType::kF32, {T, hd}));
  SY_ASSIGN_OR_RETURN(ws_.head_in, b.Allocate(DType::kF32, {max_logit_rows_, d}));
  SY_ASSIGN_OR_RETURN(ws_.logits, b.Allocate(DType::kF32, {max_logit_rows_, c.vocab_size}));
  const std::vector<float> inv = c.RopeInverseFrequencies();
  Tensor host = Tensor::Empty(DType::kF32, {static_cast<int64_t>(inv.size())});
  std::copy(inv.begin(), inv.end(), host.data<float>());
  SY_ASSIGN_OR_RETURN(ws_.inv_freq, b.Upload(host));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> LlamaModel::Forward(const StepMetadata& meta, const Tensor& logit_rows,
                                           KvCache& cache, LayerHooks* hooks) {
  const ModelConfig& c = config_;
  const int64_t T = meta.num_tokens, R = logit_rows.numel();
  if (T <= 0 || T > max_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("step has ", T, " tokens; the engine takes 1 to ", max_tokens_));
  }
  if (R > max_logit_rows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step asks for ", R, " logit rows; the engine returns at most ", max_logit_rows_));
  }
  Backend& b = *backend_;
  Tensor hidden = ws_.hidden.Rows(0, T), normed = ws_.normed.Rows(0, T);
  Tensor qkv = ws_.qkv.Rows(0, T), q = ws_.q.Rows(0, T), k = ws_.k.Rows(0, T), v = ws_.v.Rows(0, T),
         attn = ws_.attn.Rows(0, T);
  Tensor gate_up = ws_.gate_up.Rows(0, T), act = ws_.act.Rows(0, T);
  Tensor cos_sin = ws_.cos_sin.Rows(0, T);

  AttentionParams ap;
  ap.num_heads = static_cast<int>(c.num_heads);
  ap.num_kv_heads = static_cast<int>(c.num_kv_heads);
  ap.head_dim = static_cast<int>(c.head_dim);
  ap.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  const float eps = static_cast<float>(c.rms_norm_eps);

  b.Embedding(weights_.embed, meta.token_ids, hidden);
  b.RopeTable(meta.positions, ws_.inv_freq, cos_sin);
  using L = LayerHooks::Linear;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    const int li = static_cast<int>(l);
    b.RmsNorm(hidden, w.attn_norm, eps, normed);
    b.Linear(normed, w.qkv, w.qkv_bias.defined() ? &w.qkv_bias : nullptr, qkv, false);
    if (hooks) hooks->AfterLinear(li, L::kQkv, normed, qkv);
    b.SplitQkvRope(qkv, cos_sin, ap.num_heads, ap.num_kv_heads, q, k, v);
    b.WriteKv(k, v, meta, li, cache);
    ap.sliding_window = c.sliding_window[l];
    b.Attention(q, meta, li, cache, ap, attn);
    b.Linear(attn, w.o, w.o_bias.defined() ? &w.o_bias : nullptr, hidden, true);
    if (hooks) hooks->AfterLinear(li, L::kO, attn, hidden);

    b.RmsNorm(hidden, w.ffn_norm, eps, normed);
    b.Linear(normed, w.gate_up, w.gate_up_bias.defined() ? &w.gate_up_bias : nullptr, gate_up,
             false);
    if (hooks) hooks->AfterLinear(li, L::kGateUp, normed, gate_up);
    b.GatedActivation(gate_up, c.hidden_act, act);
    if (hooks) hooks->BeforeDown(li, normed, gate_up, act);
    b.Linear(act, w.down, w.down_bias.defined() ? &w.down_bias : nullptr, hidden, true);
    if (hooks) hooks->AfterLinear(li, L::kDown, act, hidden);
  }
  Tensor head_in = ws_.head_in.Rows(0, R), logits = ws_.logits.Rows(0, R);
  if (R > 0) {
    b.GatherRows(hidden, logit_rows, head_in);
    b.RmsNorm(head_in, weights_.final_norm, eps, head_in);
    b.Linear(head_in, weights_.lm_head, nullptr, logits, false);
  }
  return logits;
}

}  // namespace switchyard
