#include "engine/backends/cpu/onednn_matmul.h"

#include <unordered_map>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "engine/core/check.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace switchyard::cpu {
namespace {

using dt = dnnl::memory::data_type;

struct Key {
  int64_t m, k, n, ldy;
  dt type;
  bool bias, accumulate;
  bool operator==(const Key&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Key& key) {
    return H::combine(std::move(h), key.m, key.k, key.n, key.ldy, static_cast<int>(key.type),
                      key.bias, key.accumulate);
  }
};

struct Descs {
  dnnl::memory::desc src, wei, dst, bias;
};

Descs MakeDescs(const Key& key) {
  return {dnnl::memory::desc({key.m, key.k}, key.type, {key.k, 1}),
          // w is [n, k] row-major: the [k, n] operand with strides (1, k).
          dnnl::memory::desc({key.k, key.n}, key.type, {1, key.k}),
          dnnl::memory::desc({key.m, key.n}, dt::f32, {key.ldy, 1}),
          dnnl::memory::desc({1, key.n}, dt::f32, {key.n, 1})};
}

}  // namespace

struct OneDnnMatmul::State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  absl::flat_hash_map<Key, dnnl::matmul> primitives;

  dnnl::matmul& Get(const Key& key) {
    auto it = primitives.find(key);
    if (it != primitives.end()) return it->second;
    const Descs d = MakeDescs(key);
    dnnl::primitive_attr attr;
    if (key.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::desc desc = key.bias ? dnnl::matmul::desc(d.src, d.wei, d.bias, d.dst)
                                             : dnnl::matmul::desc(d.src, d.wei, d.dst);
    return primitives.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine)))
        .first->second;
  }
};

OneDnnMatmul::OneDnnMatmul() : state_(std::make_unique<State>()) {}
OneDnnMatmul::~OneDnnMatmul() = default;

void OneDnnMatmul::Matmul(const void* x, const void* w, DType dtype, int64_t m, int64_t k,
                          int64_t n, const float* bias, float* y, int64_t ldy, bool accumulate) {
  SY_CHECK(dtype == DType::kF32 || dtype == DType::kBF16);
  State& s = *state_;
  const Key key{m,         k, n, ldy, dtype == DType::kF32 ? dt::f32 : dt::bf16, bias != nullptr,
                accumulate};
  dnnl::matmul& prim = s.Get(key);
  const Descs d = MakeDescs(key);
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, dnnl::memory(d.src, s.engine, const_cast<void*>(x))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(d.wei, s.engine, const_cast<void*>(w))},
      {DNNL_ARG_DST, dnnl::memory(d.dst, s.engine, y)},
  };
  if (bias != nullptr) {
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(d.bias, s.engine, const_cast<float*>(bias)));
  }
  prim.execute(s.stream, args);
  s.stream.wait();
}

}  // namespace switchyard::cpu
