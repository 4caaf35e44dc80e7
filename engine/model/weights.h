// A Llama-family model's weights on a backend. q/k/v and gate/up are fused into one matrix each at
// load (one GEMM instead of three or two). Matrices keep their stored dtype (in the backend's
// layout); norms and biases are small and kept in F32.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backends/backend.h"
#include "engine/core/quant.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"

namespace switchyard {

struct LayerWeights {
  Tensor attn_norm;     // [d] F32
  Weight qkv;           // [(heads + 2 kv_heads) * head_dim, d]
  Tensor qkv_bias;      // [(heads + 2 kv_heads) * head_dim] F32, or undefined
  Weight o;             // [d, heads * head_dim]
  Tensor o_bias;        // [d] F32, or undefined
  Tensor ffn_norm;      // [d] F32
  Weight gate_up;       // [2 * ffn, d]: gate rows, then up rows
  Tensor gate_up_bias;  // [2 * ffn] F32, or undefined
  Weight down;          // [d, ffn]
  Tensor down_bias;     // [d] F32, or undefined
};

// A matrix as a file holds it: dense (F32/F16/BF16 `data` [rows, cols]) or block-quantized
// (`quant` set, `data` U8 [rows, row bytes]).
struct HostMatrix {
  Tensor data;
  QuantType quant = QuantType::kNone;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Where a model's tensors come from, by their Hugging Face names (a safetensors folder, or a GGUF
// file whose names and layouts are mapped back).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool Contains(const std::string& name) const = 0;
  // Refuses a missing tensor, or one whose shape is not [rows, cols], naming it.
  virtual absl::StatusOr<HostMatrix> Matrix(const std::string& name, int64_t rows,
                                            int64_t cols) const = 0;
  // A 1-D tensor of n values (norms, biases), dense.
  virtual absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) const = 0;
};

std::unique_ptr<WeightSource> SafetensorsWeights(const TensorSet& tensors);

struct WeightLoadOptions {
  // Quantizes dense matrices at load (Q8_0 or Q4_0; a matrix whose rows are not whole blocks of
  // 32 stays dense). kNone keeps what the source holds.
  QuantType quantize = QuantType::kNone;
};

struct ModelWeights {
  Weight embed;  // [vocab, d]
  std::vector<LayerWeights> layers;
  Tensor final_norm;                   // [d] F32
  Weight lm_head;                      // [vocab, d]; the embedding when tied
  DType dtype = DType::kF32;           // of the large matrices (U8 when quantized)
  QuantType quant = QuantType::kNone;  // of the first layer's FFN, when quantized
  size_t bytes = 0;                    // total bytes of the weights read per token
};

// Reads and checks every tensor the config implies; refuses missing or mis-shaped ones by name.
absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const WeightSource& source,
                                              Backend& backend,
                                              const WeightLoadOptions& options = {});
absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const TensorSet& tensors,
                                              Backend& backend);

}  // namespace switchyard
