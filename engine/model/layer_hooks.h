// Where adapters meet the forward pass. The model knows nothing of adapter formats: it calls these
// hooks (when a step has adapters) and they add their contributions in place.
#pragma once

#include "engine/core/tensor.h"

namespace switchyard {

class LayerHooks {
 public:
  enum class Linear { kQkv, kO, kGateUp, kDown };

  virtual ~LayerHooks() = default;
  // After a base linear of `layer`: `x` is its input [T, in], `y` its output (for kO and kDown,
  // the residual stream the output was accumulated into).
  virtual void AfterLinear(int layer, Linear which, const Tensor& x, Tensor& y) = 0;
  // Between the FFN's activation and its down projection: `x` is the FFN input (after the
  // post-attention norm), `gate_up` the base gate/up output; rows of `act` may be replaced.
  virtual void BeforeDown(int layer, const Tensor& x, const Tensor& gate_up, Tensor& act) = 0;
};

}  // namespace switchyard
