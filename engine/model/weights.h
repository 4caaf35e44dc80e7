// A Llama-family model's weights on a backend. q/k/v and gate/up are fused into one matrix each at
// load (one GEMM instead of three or two). Matrices keep their stored dtype (in the backend's
// layout); norms and biases are small and kept in F32.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "engine/backends/backend.h"
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

struct ModelWeights {
  Weight embed;  // [vocab, d]
  std::vector<LayerWeights> layers;
  Tensor final_norm;          // [d] F32
  Weight lm_head;             // [vocab, d]; the embedding when tied
  DType dtype = DType::kF32;  // of the large matrices
  size_t bytes = 0;           // total bytes of the weights read per token
};

// Reads and checks every tensor the config implies; refuses missing or mis-shaped ones by name.
absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const TensorSet& tensors,
                                              Backend& backend);

}  // namespace switchyard
