#include "engine/engine.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/adapters/loader.h"
#include "engine/backends/cpu/cpu_backend.h"
#if SWITCHYARD_HAVE_CUDA
#include "engine/backends/cuda/cuda_backend.h"
#endif
#include "engine/core/status_macros.h"
#include "engine/model/gguf_model.h"
#include "engine/model/llama.h"
#include "engine/model/safetensors.h"
#include "engine/model/weights.h"

namespace switchyard {

struct Engine::State {
  ModelConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  KvCache kv;
  // Host-side metadata buffers, reused every step.
  std::vector<int32_t> positions, slots, token_seq, tables, logit_rows;
  std::vector<AdapterMember> single_member;  // per sequence with `adapter`
  std::vector<std::span<const AdapterMember>> token_members;
  std::vector<uint8_t> token_decisions;  // record this token's routing decisions
  std::unique_ptr<MoeLoraExecutor> moe_lora;
  Tensor host_logits;
  std::unique_ptr<RoutingWindow> routing_window;
};

Device DefaultDevice() {
#if SWITCHYARD_HAVE_CUDA
  if (CudaDeviceCount() > 0) return Device::kCuda;
#endif
  return Device::kCpu;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::string& model_path) {
  if (!IsGgufPath(model_path)) return Tokenizer::Load(model_path);
  SY_ASSIGN_OR_RETURN(std::shared_ptr<const GgufFile> file, GgufFile::Open(model_path));
  SY_ASSIGN_OR_RETURN(TokenizerFiles files, GgufTokenizerFiles(*file));
  return Tokenizer::FromJson(files.tokenizer_json, files.tokenizer_config_json);
}

absl::StatusOr<QuantType> ParseQuantization(absl::string_view name) {
  if (name == "none" || name.empty()) return QuantType::kNone;
  if (name == "int8") return QuantType::kQ8_0;
  if (name == "int4") return QuantType::kQ4_0;
  return absl::InvalidArgumentError(
      absl::StrCat("--quantization: unknown value \"", name, "\" (use none, int8 or int4)"));
}

absl::StatusOr<std::optional<DType>> ParseKvCacheDType(absl::string_view name) {
  if (name == "auto" || name.empty()) return std::nullopt;
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_cache_dtype: unknown value \"", name, "\" (use auto, f32, bf16 or f16)"));
}

absl::StatusOr<QuantActivations> ParseQuantActivations(absl::string_view name) {
  if (name == "int8") return QuantActivations::kInt8;
  if (name == "f32") return QuantActivations::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("--quantized_activations: unknown value \"", name, "\" (use int8 or f32)"));
}

absl::StatusOr<MatmulPrecision> ParseMatmulPrecision(absl::string_view name) {
  if (name == "f32") return MatmulPrecision::kF32;
  if (name == "bf16") return MatmulPrecision::kBF16;
  if (name == "auto") return MatmulPrecision::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("--matmul_precision: unknown value \"", name, "\" (use f32, bf16 or auto)"));
}

absl::Status ParseNumerics(absl::string_view quantization, absl::string_view activations,
                           absl::string_view kv_cache_dtype, EngineOptions* options) {
  SY_ASSIGN_OR_RETURN(options->quantization, ParseQuantization(quantization));
  SY_ASSIGN_OR_RETURN(options->quant_activations, ParseQuantActivations(activations));
  SY_ASSIGN_OR_RETURN(options->kv_cache_dtype, ParseKvCacheDType(kv_cache_dtype));
  return absl::OkStatus();
}

Engine::Engine(const EngineOptions& options) : options_(options) {}
Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.block_size <= 0 || options.max_batch_tokens <= 0 || options.max_batch_seqs <= 0) {
    return absl::InvalidArgumentError(
        "block_size, max_batch_tokens and max_batch_seqs must be > 0");
  }
  std::unique_ptr<Engine> engine(new Engine(options));
  auto state = std::make_unique<State>();
  std::shared_ptr<const GgufFile> gguf;
  if (IsGgufPath(options.model_dir)) {
    SY_ASSIGN_OR_RETURN(gguf, GgufFile::Open(options.model_dir));
    SY_ASSIGN_OR_RETURN(state->config, GgufModelConfig(*gguf));
  } else {
    SY_ASSIGN_OR_RETURN(state->config, ModelConfig::Load(options.model_dir));
  }
  state->routing_window = std::make_unique<RoutingWindow>(options.routing_window);
  if (options.device == Device::kCuda) {
#if SWITCHYARD_HAVE_CUDA
    SY_ASSIGN_OR_RETURN(state->backend, CreateCudaBackend(0));
#else
    return absl::UnimplementedError(
        "this build has no CUDA backend (nvcc was not found); use "
        "--device=cpu");
#endif
  } else {
    state->backend = CreateCpuBackend({.matmul_precision = options.matmul_precision,
                                       .quant_activations = options.quant_activations});
  }
  TensorSet tensors;
  std::unique_ptr<WeightSource> source;
  if (gguf != nullptr) {
    source = GgufWeights(gguf, state->config);
  } else {
    SY_ASSIGN_OR_RETURN(tensors, TensorSet::OpenFolder(options.model_dir));
    source = SafetensorsWeights(tensors);
  }
  SY_ASSIGN_OR_RETURN(ModelWeights weights,
                      LoadModelWeights(state->config, *source, *state->backend,
                                       {.quantize = options.quantization}));
  SY_ASSIGN_OR_RETURN(state->model,
                      LlamaModel::Create(state->config, std::move(weights), state->backend.get(),
                                         options.max_batch_tokens, options.max_batch_seqs));
  const ModelConfig& c = state->config;
  KvCacheSpec spec;
  spec.num_layers = static_cast<int>(c.num_layers);
  spec.block_size = options.block_size;
  spec.num_kv_heads = static_cast<int>(c.num_kv_heads);
  spec.head_dim = static_cast<int>(c.head_dim);
  const bool f32_model = state->model->weights().dtype == DType::kF32;
  spec.dtype = options.kv_cache_dtype.value_or(
      f32_model || options.device == Device::kCuda ? DType::kF32 : DType::kBF16);
  const int64_t block_bytes = int64_t{2} * c.num_layers * c.num_kv_heads * options.block_size *
                              c.head_dim * static_cast<int64_t>(SizeOf(spec.dtype));
  spec.num_blocks =
      options.kv_cache_blocks > 0
          ? options.kv_cache_blocks
          : static_cast<int>(std::min<int64_t>(options.kv_cache_bytes / block_bytes, 1 << 30));
  if (spec.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache budget of ", options.kv_cache_bytes,
                                                   " bytes holds no block of ", block_bytes,
                                                   " bytes"));
  }
  SY_ASSIGN_OR_RETURN(state->kv, state->backend->AllocateKvCache(spec));
  state->host_logits = Tensor::Empty(DType::kF32, {options.max_batch_seqs, c.vocab_size});
  state->moe_lora = std::make_unique<MoeLoraExecutor>(*state->backend, state->config,
                                                      state->model->weights(), options.moe_lora);
  engine->state_ = std::move(state);
  return engine;
}

const ModelConfig& Engine::config() const { return state_->config; }
int Engine::num_kv_blocks() const { return state_->kv.spec.num_blocks; }
size_t Engine::weight_bytes() const { return state_->model->weights().bytes; }

std::string Engine::Describe() const {
  const ModelConfig& c = state_->config;
  return absl::StrFormat(
      "%s: %d layers, hidden %d, heads %d/%d, ffn %d, vocab %d, %s weights (%.1f MB); %s; KV "
      "cache %d blocks of %d tokens in %s",
      c.architecture_name, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads,
      c.intermediate_size, c.vocab_size,
      state_->model->weights().quant != QuantType::kNone
          ? Traits(state_->model->weights().quant).name
          : DTypeName(state_->model->weights().dtype),
      weight_bytes() / 1e6, state_->backend->Describe(), num_kv_blocks(), options_.block_size,
      DTypeName(state_->kv.spec.dtype));
}

absl::Status Engine::Validate(const StepBatch& batch) const {
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  if (T == 0) return absl::InvalidArgumentError("step has no tokens");
  if (T > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("step has ", T, " tokens; max_batch_tokens is ", options_.max_batch_tokens));
  }
  if (static_cast<int64_t>(batch.sequences.size()) > options_.max_batch_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("step has ", batch.sequences.size(),
                                                   " sequences; max_batch_seqs is ",
                                                   options_.max_batch_seqs));
  }
  const int64_t vocab = state_->config.vocab_size;
  for (int32_t t : batch.tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  int64_t sum = 0;
  const int num_blocks = num_kv_blocks();
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const StepSequence& s = batch.sequences[i];
    if (s.num_tokens <= 0 || s.first_position < 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no tokens"));
    }
    const int64_t end = s.first_position + s.num_tokens;
    if (end > static_cast<int64_t>(s.block_table.size()) * options_.block_size) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, "'s block table covers ",
                                                     s.block_table.size() * options_.block_size,
                                                     " positions; it needs ", end));
    }
    SY_RETURN_IF_ERROR(ValidateAdapters(s, i));
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", i, " names KV block ", b, " of ", num_blocks));
      }
    }
    sum += s.num_tokens;
  }
  if (sum != T) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequences cover ", sum, " tokens but the step holds ", T));
  }
  return absl::OkStatus();
}

absl::Status Engine::ValidateAdapters(const StepSequence& s, size_t i) const {
  if (s.adapter != nullptr && !s.mixture.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", i, " names both an adapter and a mixture"));
  }
  if (s.mixture.size() > kMaxMixtureMembers) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", i, "'s mixture has ",
                                                   s.mixture.size(), " members; at most ",
                                                   kMaxMixtureMembers));
  }
  const AdapterMember single{s.adapter, 1.0f};
  for (const AdapterMember& m : s.adapter != nullptr ? std::span(&single, 1) : s.mixture) {
    if (m.adapter == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, "'s mixture has no adapter"));
    }
    if (!std::isfinite(m.weight)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, "'s weight for adapter \"",
                                                     m.adapter->name, "\" is not finite"));
    }
    if (static_cast<int64_t>(m.adapter->layers.size()) != state_->config.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, "'s adapter \"",
                                                     m.adapter->name, "\" was built for ",
                                                     m.adapter->layers.size(), " layers"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StepOutput> Engine::Step(const StepBatch& batch) {
  SY_RETURN_IF_ERROR(Validate(batch));
  State& s = *state_;
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  const int64_t S = static_cast<int64_t>(batch.sequences.size());
  int64_t max_blocks = 1;
  for (const StepSequence& seq : batch.sequences) {
    max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(seq.block_table.size()));
  }
  s.positions.resize(T);
  s.slots.resize(T);
  s.token_seq.resize(T);
  s.tables.assign(static_cast<size_t>(S * max_blocks), 0);
  s.logit_rows.clear();
  s.single_member.resize(static_cast<size_t>(S));
  s.token_members.assign(static_cast<size_t>(T), {});
  s.token_decisions.assign(static_cast<size_t>(T), 0);
  const int bs = options_.block_size;
  int64_t t = 0;
  for (int64_t i = 0; i < S; ++i) {
    const StepSequence& seq = batch.sequences[i];
    std::copy(seq.block_table.begin(), seq.block_table.end(), s.tables.begin() + i * max_blocks);
    s.single_member[i] = {seq.adapter, 1.0f};
    const std::span<const AdapterMember> members =
        seq.adapter != nullptr ? std::span(&s.single_member[i], 1) : seq.mixture;
    for (int64_t j = 0; j < seq.num_tokens; ++j, ++t) {
      const int64_t pos = seq.first_position + j;
      s.positions[t] = static_cast<int32_t>(pos);
      s.slots[t] = seq.block_table[pos / bs] * bs + static_cast<int32_t>(pos % bs);
      s.token_seq[t] = static_cast<int32_t>(i);
      s.token_members[t] = members;
      s.token_decisions[t] = seq.record_routing ? 1 : 0;
    }
    if (seq.want_logits) s.logit_rows.push_back(static_cast<int32_t>(t - 1));
  }
  const auto wrap = [](std::vector<int32_t>& v, Shape shape) {
    return Tensor::Wrap(v.data(), DType::kI32, std::move(shape), nullptr);
  };
  StepMetadata host;
  host.num_tokens = T;
  host.num_seqs = S;
  host.token_ids =
      Tensor::Wrap(const_cast<int32_t*>(batch.tokens.data()), DType::kI32, {T}, nullptr);
  host.positions = wrap(s.positions, {T});
  host.slot_mapping = wrap(s.slots, {T});
  host.token_seq = wrap(s.token_seq, {T});
  host.block_tables = wrap(s.tables, {S, max_blocks});
  SY_ASSIGN_OR_RETURN(StepMetadata meta, s.backend->UploadMetadata(host));
  const int64_t R = static_cast<int64_t>(s.logit_rows.size());
  SY_ASSIGN_OR_RETURN(Tensor rows, s.backend->Upload(wrap(s.logit_rows, {R})));
  StepOutput out;
  SY_ASSIGN_OR_RETURN(const bool adapted,
                      s.moe_lora->BeginStep(s.token_members, s.token_decisions, &out.routing));
  SY_ASSIGN_OR_RETURN(Tensor logits,
                      s.model->Forward(meta, rows, s.kv, adapted ? s.moe_lora.get() : nullptr));
  if (adapted) SY_RETURN_IF_ERROR(s.moe_lora->EndStep());
  out.logits = s.host_logits.Rows(0, R);
  SY_RETURN_IF_ERROR(s.backend->CopyToHost(logits, out.logits));
  SY_RETURN_IF_ERROR(s.backend->Synchronize());
  s.routing_window->Add(out.routing);
  return out;
}

}  // namespace switchyard

namespace switchyard {

RoutingWindow& Engine::routing_window() const { return *state_->routing_window; }

void Engine::set_moe_lora_options(const MoeLoraOptions& options) {
  options_.moe_lora = options;
  state_->moe_lora = std::make_unique<MoeLoraExecutor>(*state_->backend, state_->config,
                                                       state_->model->weights(), options);
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> Engine::LoadAdapter(const std::string& dir) const {
  absl::StatusOr<ConfinedDir> confined = ConfinedDir::Open(dir);
  if (!confined.ok()) return absl::NotFoundError(absl::StrCat("cannot open ", dir));
  return LoadAdapter(*confined);
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> Engine::LoadAdapter(const ConfinedDir& dir) const {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterFiles> files, ReadAdapterFiles(dir));
  return BuildAdapter(*files);
}

absl::StatusOr<std::unique_ptr<AdapterFiles>> Engine::ReadAdapterFiles(
    const ConfinedDir& dir) const {
  return switchyard::ReadAdapterFiles(dir);
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> Engine::BuildAdapter(const AdapterFiles& files,
                                                                     bool diagnose) const {
  // OpenMP's thread count is per calling thread: keep this one's packing single-threaded.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const DType dtype = options_.adapter_dtype.value_or(
      state_->model->weights().dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
  auto adapter = switchyard::BuildAdapter(files, state_->config, *state_->backend, dtype, diagnose);
  omp_set_num_threads(saved);
  return adapter;
}

}  // namespace switchyard
