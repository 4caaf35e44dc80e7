#include "engine/model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace {

absl::StatusOr<Tensor> ToF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  if (t.dtype() == DType::kI32 || t.dtype() == DType::kU8)
    return absl::InvalidArgumentError("integer tensor where floats expected");
  Tensor out = Tensor::Empty(DType::kF32, t.shape());
  ConvertToF32(t.dtype(), t.raw(), out.data<float>(), static_cast<size_t>(t.numel()));
  return out;
}

class SafetensorsSource : public WeightSource {
 public:
  explicit SafetensorsSource(const TensorSet& tensors) : tensors_(tensors) {}

  bool Contains(const std::string& name) const override { return tensors_.Contains(name); }

  absl::StatusOr<HostMatrix> Matrix(const std::string& name, int64_t rows,
                                    int64_t cols) const override {
    SY_ASSIGN_OR_RETURN(Tensor t, tensors_.Get(name, {rows, cols}));
    if (t.dtype() == DType::kI32) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" is an integer tensor"));
    }
    return HostMatrix{t, QuantType::kNone, rows, cols};
  }

  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) const override {
    SY_ASSIGN_OR_RETURN(Tensor t, tensors_.Get(name, {n}));
    return ToF32(t);
  }

 private:
  const TensorSet& tensors_;
};

// Concatenates tensors along rows; all must share dtype and column count.
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

// Matrices stacked along rows (q/k/v, gate/up), all in one format.
absl::StatusOr<HostMatrix> ConcatMatrices(
    const std::vector<std::pair<std::string, HostMatrix>>& parts) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  HostMatrix out = parts[0].second;
  out.rows = 0;
  for (const auto& [name, m] : parts) {
    tensors.emplace_back(name, m.data);
    out.rows += m.rows;
  }
  SY_ASSIGN_OR_RETURN(out.data, ConcatRows(tensors));
  return out;
}

bool SameFormat(const std::vector<std::pair<std::string, HostMatrix>>& parts) {
  for (const auto& [name, m] : parts) {
    if (m.quant != parts[0].second.quant || m.data.dtype() != parts[0].second.data.dtype()) {
      return false;
    }
  }
  return true;
}

// Quantizes a dense matrix (rows of whole 32-weight blocks) to `type`.
absl::StatusOr<HostMatrix> Quantize(const HostMatrix& m, QuantType type) {
  if (m.quant != QuantType::kNone || type == QuantType::kNone || m.cols % 32 != 0) return m;
  const int64_t row_bytes = static_cast<int64_t>(QuantRowBytes(type, m.cols));
  SY_ASSIGN_OR_RETURN(Tensor blocks, Tensor::TryEmpty(DType::kU8, {m.rows, row_bytes}));
  const size_t elem = SizeOf(m.data.dtype());
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(m.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m.rows; ++r) {
      ConvertToF32(m.data.dtype(), m.data.data<char>() + r * m.cols * elem, row.data(),
                   static_cast<size_t>(m.cols));
      QuantizeRow(type, row.data(), blocks.data<uint8_t>() + r * row_bytes, m.cols);
    }
  }
  return HostMatrix{blocks, type, m.rows, m.cols};
}

class Loader {
 public:
  Loader(const ModelConfig& c, const WeightSource& source, Backend& backend,
         const WeightLoadOptions& options)
      : c_(c), source_(source), backend_(backend), options_(options) {}

  absl::StatusOr<Tensor> OptionalBias(const std::string& name, int64_t n, bool expected) {
    if (!expected) {
      if (source_.Contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" is present but config.json implies no bias"));
      }
      return Tensor();
    }
    return source_.Vector(name, n);
  }

  absl::StatusOr<Tensor> Upload(const absl::StatusOr<Tensor>& host) {
    if (!host.ok()) return host.status();
    if (!host->defined()) return Tensor();
    bytes_ += host->nbytes();
    return backend_.Upload(*host);
  }

  absl::StatusOr<Weight> Prepare(const absl::StatusOr<HostMatrix>& host) {
    if (!host.ok()) return host.status();
    SY_ASSIGN_OR_RETURN(HostMatrix m, Quantize(*host, options_.quantize));
    Weight w;
    if (m.quant != QuantType::kNone) {
      SY_ASSIGN_OR_RETURN(w, backend_.PrepareQuantizedWeight(m.data, m.quant, m.cols));
    } else {
      SY_ASSIGN_OR_RETURN(w, backend_.PrepareWeight(m.data));
    }
    bytes_ += w.bytes();
    return w;
  }

  // Matrices fused along rows: one matrix when they share a format, else a stack of parts (each
  // must then be quantized).
  absl::StatusOr<Weight> PrepareFused(
      const absl::StatusOr<std::vector<std::pair<std::string, HostMatrix>>>& parts) {
    if (!parts.ok()) return parts.status();
    if (SameFormat(*parts) || options_.quantize != QuantType::kNone) {
      std::vector<std::pair<std::string, HostMatrix>> quantized;
      for (const auto& [name, m] : *parts) {
        SY_ASSIGN_OR_RETURN(HostMatrix q, Quantize(m, options_.quantize));
        quantized.emplace_back(name, std::move(q));
      }
      if (SameFormat(quantized)) return Prepare(ConcatMatrices(quantized));
    }
    bool any_quantized = false;
    for (const auto& [name, m] : *parts) any_quantized |= m.quant != QuantType::kNone;
    if (!any_quantized) return Prepare(ConcatMatrices(*parts));  // refuses mixed dtypes by name
    Weight stack;
    for (const auto& [name, m] : *parts) {
      if (m.quant == QuantType::kNone) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", name, "\" is dense but the matrices fused with it are quantized"));
      }
      SY_ASSIGN_OR_RETURN(Weight w, Prepare(m));
      stack.rows += w.rows;
      stack.cols = w.cols;
      stack.quant = w.quant;
      stack.dtype = w.dtype;
      stack.parts.push_back(std::move(w));
    }
    return stack;
  }

  // q, k and v of layer prefix p.
  absl::StatusOr<std::vector<std::pair<std::string, HostMatrix>>> Qkv(const std::string& p) {
    const int64_t d = c_.hidden_size, hd = c_.head_dim;
    std::vector<std::pair<std::string, HostMatrix>> parts;
    for (const auto& [name, rows] : {std::pair<const char*, int64_t>{"q_proj", c_.num_heads * hd},
                                     {"k_proj", c_.num_kv_heads * hd},
                                     {"v_proj", c_.num_kv_heads * hd}}) {
      const std::string full = absl::StrCat(p, "self_attn.", name, ".weight");
      SY_ASSIGN_OR_RETURN(HostMatrix m, source_.Matrix(full, rows, d));
      parts.emplace_back(full, std::move(m));
    }
    return parts;
  }

  absl::StatusOr<Tensor> QkvBias(const std::string& p) {
    const int64_t hd = c_.head_dim;
    if (!c_.qkv_bias) {
      for (const char* name : {"q_proj", "k_proj", "v_proj"}) {
        SY_RETURN_IF_ERROR(
            OptionalBias(absl::StrCat(p, "self_attn.", name, ".bias"), 0, false).status());
      }
      return Tensor();
    }
    std::vector<std::pair<std::string, Tensor>> parts;
    for (const auto& [name, n] : {std::pair<const char*, int64_t>{"q_proj", c_.num_heads * hd},
                                  {"k_proj", c_.num_kv_heads * hd},
                                  {"v_proj", c_.num_kv_heads * hd}}) {
      const std::string full = absl::StrCat(p, "self_attn.", name, ".bias");
      SY_ASSIGN_OR_RETURN(Tensor b, source_.Vector(full, n));
      parts.emplace_back(full, std::move(b));
    }
    return ConcatRows(parts);
  }

  absl::StatusOr<std::vector<std::pair<std::string, HostMatrix>>> GateUp(const std::string& p) {
    const int64_t d = c_.hidden_size, F = c_.intermediate_size;
    SY_ASSIGN_OR_RETURN(HostMatrix gate, source_.Matrix(p + "mlp.gate_proj.weight", F, d));
    SY_ASSIGN_OR_RETURN(HostMatrix up, source_.Matrix(p + "mlp.up_proj.weight", F, d));
    return std::vector<std::pair<std::string, HostMatrix>>{{p + "mlp.gate_proj.weight", gate},
                                                           {p + "mlp.up_proj.weight", up}};
  }

  absl::StatusOr<LayerWeights> Layer(int64_t l) {
    const int64_t d = c_.hidden_size, F = c_.intermediate_size;
    const int64_t q_rows = c_.num_heads * c_.head_dim;
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights lw;
    SY_ASSIGN_OR_RETURN(lw.attn_norm, Upload(source_.Vector(p + "input_layernorm.weight", d)));
    SY_ASSIGN_OR_RETURN(lw.qkv, PrepareFused(Qkv(p)));
    SY_ASSIGN_OR_RETURN(lw.qkv_bias, Upload(QkvBias(p)));
    SY_ASSIGN_OR_RETURN(lw.o, Prepare(source_.Matrix(p + "self_attn.o_proj.weight", d, q_rows)));
    SY_ASSIGN_OR_RETURN(lw.o_bias, Upload(OptionalBias(p + "self_attn.o_proj.bias", d, c_.o_bias)));
    SY_ASSIGN_OR_RETURN(lw.ffn_norm,
                        Upload(source_.Vector(p + "post_attention_layernorm.weight", d)));
    SY_ASSIGN_OR_RETURN(lw.gate_up, PrepareFused(GateUp(p)));
    if (c_.mlp_bias) {
      SY_ASSIGN_OR_RETURN(Tensor gb, source_.Vector(p + "mlp.gate_proj.bias", F));
      SY_ASSIGN_OR_RETURN(Tensor ub, source_.Vector(p + "mlp.up_proj.bias", F));
      SY_ASSIGN_OR_RETURN(
          lw.gate_up_bias,
          Upload(ConcatRows({{p + "mlp.gate_proj.bias", gb}, {p + "mlp.up_proj.bias", ub}})));
    }
    SY_ASSIGN_OR_RETURN(lw.down, Prepare(source_.Matrix(p + "mlp.down_proj.weight", d, F)));
    SY_ASSIGN_OR_RETURN(lw.down_bias,
                        Upload(OptionalBias(p + "mlp.down_proj.bias", d, c_.mlp_bias)));
    return lw;
  }

  absl::StatusOr<ModelWeights> Load() {
    const int64_t d = c_.hidden_size;
    ModelWeights w;
    SY_ASSIGN_OR_RETURN(HostMatrix embed,
                        source_.Matrix("model.embed_tokens.weight", c_.vocab_size, d));
    SY_ASSIGN_OR_RETURN(w.embed, Prepare(embed));
    bytes_ = 0;  // the embedding table is gathered, not streamed
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      SY_ASSIGN_OR_RETURN(LayerWeights lw, Layer(l));
      w.layers.push_back(std::move(lw));
    }
    SY_ASSIGN_OR_RETURN(w.final_norm, Upload(source_.Vector("model.norm.weight", d)));
    if (c_.tie_word_embeddings) {
      w.lm_head = w.embed;
    } else {
      SY_ASSIGN_OR_RETURN(w.lm_head, Prepare(source_.Matrix("lm_head.weight", c_.vocab_size, d)));
    }
    // Only the head counts per token of the embedding table (when tied).
    w.bytes = bytes_ + (c_.tie_word_embeddings ? w.embed.bytes() : 0);
    const Weight& ffn = w.layers.empty() ? w.embed : w.layers[0].gate_up;
    w.dtype = ffn.dtype;
    w.quant = ffn.quant;
    return w;
  }

 private:
  const ModelConfig& c_;
  const WeightSource& source_;
  Backend& backend_;
  const WeightLoadOptions& options_;
  size_t bytes_ = 0;
};

}  // namespace

std::unique_ptr<WeightSource> SafetensorsWeights(const TensorSet& tensors) {
  return std::make_unique<SafetensorsSource>(tensors);
}

absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const WeightSource& source,
                                              Backend& backend, const WeightLoadOptions& options) {
  return Loader(config, source, backend, options).Load();
}

absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const TensorSet& tensors,
                                              Backend& backend) {
  return LoadModelWeights(config, SafetensorsSource(tensors), backend);
}

}  // namespace switchyard
