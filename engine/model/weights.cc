#include "engine/model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace {

absl::StatusOr<Tensor> ToF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  if (t.dtype() == DType::kI32)
    return absl::InvalidArgumentError("integer tensor where floats expected");
  Tensor out = Tensor::Empty(DType::kF32, t.shape());
  ConvertToF32(t.dtype(), t.raw(), out.data<float>(), static_cast<size_t>(t.numel()));
  return out;
}

// Concatenates matrices along rows; all must share dtype and column count.
absl::StatusOr<Tensor> ConcatRows(const std::vector<std::pair<std::string, Tensor>>& parts) {
  const DType dtype = parts[0].second.dtype();
  int64_t rows = 0;
  for (const auto& [name, t] : parts) {
    if (t.dtype() != dtype) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" is ",
                                                     DTypeName(t.dtype()), " but \"",
                                                     parts[0].first, "\" is ", DTypeName(dtype)));
    }
    rows += t.dim(0);
  }
  const int64_t cols = parts[0].second.rank() == 2 ? parts[0].second.dim(1) : 1;
  Shape shape = parts[0].second.rank() == 2 ? Shape{rows, cols} : Shape{rows};
  Tensor out = Tensor::Empty(dtype, shape);
  char* dst = out.data<char>();
  for (const auto& [name, t] : parts) {
    std::memcpy(dst, t.raw(), t.nbytes());
    dst += t.nbytes();
  }
  return out;
}

class Loader {
 public:
  Loader(const ModelConfig& c, const TensorSet& tensors, Backend& backend)
      : c_(c), tensors_(tensors), backend_(backend) {}

  absl::StatusOr<Tensor> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    SY_ASSIGN_OR_RETURN(Tensor t, tensors_.Get(name, {rows, cols}));
    if (t.dtype() == DType::kI32) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" is an integer tensor"));
    }
    return t;
  }

  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) {
    SY_ASSIGN_OR_RETURN(Tensor t, tensors_.Get(name, {n}));
    return ToF32(t);
  }

  absl::StatusOr<Tensor> OptionalBias(const std::string& name, int64_t n, bool expected) {
    if (!expected) {
      if (tensors_.Contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" is present but config.json implies no bias"));
      }
      return Tensor();
    }
    return Vector(name, n);
  }

  absl::StatusOr<Tensor> Upload(const absl::StatusOr<Tensor>& host) {
    if (!host.ok()) return host.status();
    if (!host->defined()) return Tensor();
    bytes_ += host->nbytes();
    return backend_.Upload(*host);
  }

  absl::StatusOr<Weight> Prepare(const absl::StatusOr<Tensor>& host) {
    if (!host.ok()) return host.status();
    SY_ASSIGN_OR_RETURN(Weight w, backend_.PrepareWeight(*host));
    bytes_ += w.bytes();
    return w;
  }

  absl::StatusOr<ModelWeights> Load() {
    const int64_t d = c_.hidden_size, hd = c_.head_dim, F = c_.intermediate_size;
    const int64_t q_rows = c_.num_heads * hd, kv_rows = c_.num_kv_heads * hd;
    ModelWeights w;
    SY_ASSIGN_OR_RETURN(Tensor embed, Matrix("model.embed_tokens.weight", c_.vocab_size, d));
    w.dtype = embed.dtype();
    SY_ASSIGN_OR_RETURN(w.embed, backend_.PrepareWeight(embed));
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      LayerWeights lw;
      SY_ASSIGN_OR_RETURN(lw.attn_norm, Upload(Vector(p + "input_layernorm.weight", d)));
      SY_ASSIGN_OR_RETURN(Tensor q, Matrix(p + "self_attn.q_proj.weight", q_rows, d));
      SY_ASSIGN_OR_RETURN(Tensor k, Matrix(p + "self_attn.k_proj.weight", kv_rows, d));
      SY_ASSIGN_OR_RETURN(Tensor v, Matrix(p + "self_attn.v_proj.weight", kv_rows, d));
      SY_ASSIGN_OR_RETURN(lw.qkv, Prepare(ConcatRows({{p + "self_attn.q_proj.weight", q},
                                                      {p + "self_attn.k_proj.weight", k},
                                                      {p + "self_attn.v_proj.weight", v}})));
      if (c_.qkv_bias) {
        SY_ASSIGN_OR_RETURN(Tensor qb, Vector(p + "self_attn.q_proj.bias", q_rows));
        SY_ASSIGN_OR_RETURN(Tensor kb, Vector(p + "self_attn.k_proj.bias", kv_rows));
        SY_ASSIGN_OR_RETURN(Tensor vb, Vector(p + "self_attn.v_proj.bias", kv_rows));
        SY_ASSIGN_OR_RETURN(lw.qkv_bias, Upload(ConcatRows({{p + "self_attn.q_proj.bias", qb},
                                                            {p + "self_attn.k_proj.bias", kb},
                                                            {p + "self_attn.v_proj.bias", vb}})));
      } else {
        for (const char* name : {"q_proj", "k_proj", "v_proj"}) {
          SY_RETURN_IF_ERROR(
              OptionalBias(absl::StrCat(p, "self_attn.", name, ".bias"), 0, false).status());
        }
      }
      SY_ASSIGN_OR_RETURN(lw.o, Prepare(Matrix(p + "self_attn.o_proj.weight", d, q_rows)));
      SY_ASSIGN_OR_RETURN(lw.o_bias,
                          Upload(OptionalBias(p + "self_attn.o_proj.bias", d, c_.o_bias)));
      SY_ASSIGN_OR_RETURN(lw.ffn_norm, Upload(Vector(p + "post_attention_layernorm.weight", d)));
      SY_ASSIGN_OR_RETURN(Tensor gate, Matrix(p + "mlp.gate_proj.weight", F, d));
      SY_ASSIGN_OR_RETURN(Tensor up, Matrix(p + "mlp.up_proj.weight", F, d));
      SY_ASSIGN_OR_RETURN(lw.gate_up, Prepare(ConcatRows({{p + "mlp.gate_proj.weight", gate},
                                                          {p + "mlp.up_proj.weight", up}})));
      if (c_.mlp_bias) {
        SY_ASSIGN_OR_RETURN(Tensor gb, Vector(p + "mlp.gate_proj.bias", F));
        SY_ASSIGN_OR_RETURN(Tensor ub, Vector(p + "mlp.up_proj.bias", F));
        SY_ASSIGN_OR_RETURN(
            lw.gate_up_bias,
            Upload(ConcatRows({{p + "mlp.gate_proj.bias", gb}, {p + "mlp.up_proj.bias", ub}})));
      }
      SY_ASSIGN_OR_RETURN(lw.down, Prepare(Matrix(p + "mlp.down_proj.weight", d, F)));
      SY_ASSIGN_OR_RETURN(lw.down_bias,
                          Upload(OptionalBias(p + "mlp.down_proj.bias", d, c_.mlp_bias)));
      w.layers.push_back(std::move(lw));
    }
    SY_ASSIGN_OR_RETURN(w.final_norm, Upload(Vector("model.norm.weight", d)));
    if (c_.tie_word_embeddings) {
      w.lm_head = w.embed;
    } else {
      SY_ASSIGN_OR_RETURN(w.lm_head, Prepare(Matrix("lm_head.weight", c_.vocab_size, d)));
    }
    // The embedding table is gathered, not streamed: only the head counts per token.
    w.bytes = bytes_ + (c_.tie_word_embeddings ? w.embed.bytes() : 0);
    return w;
  }

 private:
  const ModelConfig& c_;
  const TensorSet& tensors_;
  Backend& backend_;
  size_t bytes_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const TensorSet& tensors,
                                              Backend& backend) {
  return Loader(config, tensors, backend).Load();
}

}  // namespace switchyard
