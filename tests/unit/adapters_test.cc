// Adapter loading (every malformed adapter refused with a clear message, nothing executed from a
// pickle) and the registry (load, swap, unload, drain, LRU within a budget, pinning, paths).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/adapters/loader.h"
#include "engine/adapters/registry.h"
#include "engine/adapters/torch_checkpoint.h"
#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

std::string Fixtures() {
  const char* dir = std::getenv("SWITCHYARD_TEST_ADAPTERS");
  return dir != nullptr ? dir : "";
}

class AdapterLoadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions o;
    o.model_dir = TinyModelDir();
    o.kv_cache_bytes = 4 << 20;
    engine_ = std::move(*Engine::Create(o));
  }
  static void TearDownTestSuite() { engine_.reset(); }
  std::string LoadError(const std::string& name) {
    auto a = engine_->LoadAdapter(Fixtures() + "/" + name);
    EXPECT_FALSE(a.ok()) << name << " loaded";
    return a.ok() ? "" : std::string(a.status().message());
  }
  static std::unique_ptr<Engine> engine_;
};
std::unique_ptr<Engine> AdapterLoadTest::engine_;

TEST_F(AdapterLoadTest, LoadsEveryValidFixture) {
  for (const char* name : {"mixlora", "lora", "loramoe", "mhmoe"}) {
    auto a = engine_->LoadAdapter(Fixtures() + "/" + name);
    ASSERT_TRUE(a.ok()) << name << ": " << a.status();
    EXPECT_GT((*a)->bytes, 0u);
    EXPECT_EQ((*a)->layers.size(), static_cast<size_t>(engine_->config().num_layers));
  }
  auto mix = engine_->LoadAdapter(Fixtures() + "/mixlora");
  EXPECT_EQ((*mix)->family, "mixlora");
  EXPECT_EQ((*mix)->format, "torch .bin");
  ASSERT_NE((*mix)->layers[0].ffn, nullptr);
  EXPECT_EQ((*mix)->layers[0].ffn->experts.size(), 4u);
}

// A llama.cpp GGUF LoRA, as a single file named by its path below the adapter root (through the
// registry, as the server loads it) and as the only file of a folder: the PEFT adapter it came
// from, matrix for matrix.
TEST_F(AdapterLoadTest, LoadsGgufLorasAsFilesAndAsFolders) {
  AdapterRegistry registry({Fixtures(), 0},
                           [](const ConfinedDir& dir) { return engine_->LoadAdapter(dir); });
  auto peft = engine_->LoadAdapter(Fixtures() + "/lora");
  ASSERT_TRUE(peft.ok()) << peft.status();
  for (const std::string path : {"lora.gguf", "lora_gguf"}) {
    ASSERT_TRUE(registry.Load(path, path, false).ok()) << path;
    auto held = registry.Acquire(path);
    ASSERT_TRUE(held.ok()) << held.status();
    const AdapterWeights& a = **held;
    EXPECT_EQ(a.family, "lora") << path;
    EXPECT_EQ(a.format, "gguf") << path;
    EXPECT_EQ(a.bytes, (*peft)->bytes) << path;
  }
  EXPECT_EQ(registry.Load("x", "lora/adapter_config.gguf", false).status().code(),
            absl::StatusCode::kNotFound);
}

// The host tier's premise: building from the same files twice gives the same weights, and a
// build leaves the files as they were.
TEST_F(AdapterLoadTest, BuildingTwiceFromTheSameFilesGivesTheSameWeights) {
  for (const char* name : {"mixlora", "lora", "loramoe", "mhmoe"}) {
    SCOPED_TRACE(name);
    auto dir = ConfinedDir::Open(Fixtures() + "/" + name);
    ASSERT_TRUE(dir.ok());
    auto files = engine_->ReadAdapterFiles(*dir);
    ASSERT_TRUE(files.ok()) << files.status();
    EXPECT_GT((*files)->bytes, 0u);
    std::vector<std::vector<uint8_t>> before;
    for (const NamedTensor& t : (*files)->tensors) {
      const auto* p = static_cast<const uint8_t*>(t.tensor.raw());
      before.emplace_back(p, p + t.tensor.nbytes());
    }
    auto first = engine_->BuildAdapter(**files), second = engine_->BuildAdapter(**files);
    auto direct = engine_->LoadAdapter(*dir);
    ASSERT_TRUE(first.ok() && second.ok() && direct.ok());
    EXPECT_EQ((*first)->bytes, (*direct)->bytes);
    for (size_t i = 0; i < before.size(); ++i) {
      const auto* p = static_cast<const uint8_t*>((*files)->tensors[i].tensor.raw());
      ASSERT_TRUE(std::equal(before[i].begin(), before[i].end(), p)) << "a build changed a file";
    }
    // Every prepared matrix of the two builds and of the direct load is byte for byte the same.
    const auto same = [](const Weight& a, const Weight& b) {
      return a.bytes() == b.bytes() && std::memcmp(a.data.raw(), b.data.raw(), a.bytes()) == 0;
    };
    for (size_t l = 0; l < (*first)->layers.size(); ++l) {
      for (int site = 0; site < kNumLinearSites; ++site) {
        const RoutedLora* x = (*first)->layers[l].sites[site].get();
        const RoutedLora* y = (*second)->layers[l].sites[site].get();
        const RoutedLora* z = (*direct)->layers[l].sites[site].get();
        ASSERT_EQ(x == nullptr, y == nullptr);
        if (x == nullptr) continue;
        for (size_t e = 0; e < x->experts.size(); ++e) {
          EXPECT_TRUE(same(x->experts[e].a, y->experts[e].a) &&
                      same(x->experts[e].b, y->experts[e].b));
          EXPECT_TRUE(same(x->experts[e].a, z->experts[e].a) &&
                      same(x->experts[e].b, z->experts[e].b));
        }
      }
      const MixLoraBlock* x = (*first)->layers[l].ffn.get();
      const MixLoraBlock* z = (*direct)->layers[l].ffn.get();
      ASSERT_EQ(x == nullptr, z == nullptr);
      if (x == nullptr) continue;
      EXPECT_TRUE(same(x->router, z->router));
      for (size_t e = 0; e < x->experts.size(); ++e) {
        for (int p = 0; p < 3; ++p) {
          if (x->experts[e].lora[p].rank == 0) continue;
          EXPECT_TRUE(same(x->experts[e].lora[p].a, z->experts[e].lora[p].a));
          EXPECT_TRUE(same(x->experts[e].lora[p].b, z->experts[e].lora[p].b));
        }
      }
    }
  }
}

TEST_F(AdapterLoadTest, RefusesMalformedAdaptersNamingTheProblem) {
  EXPECT_THAT(LoadError("truncated"), HasSubstr("adapter_model.bin"));
  EXPECT_THAT(LoadError("wrong_shape"),
              HasSubstr("layer 0 gate_proj expert 0.lora_A has shape [8, 65], expected [8, 64]"));
  EXPECT_THAT(LoadError("nan_weights"),
              HasSubstr("layer 1 up_proj expert 2.lora_B holds a non-finite value"));
  EXPECT_THAT(LoadError("unknown_strategy"), HasSubstr("routing_strategy \"mixlora-magic\""));
  EXPECT_THAT(LoadError("unknown_peft_type"), HasSubstr("peft_type \"PREFIX_TUNING\""));
  EXPECT_THAT(LoadError("missing_router"), HasSubstr("layer 2 has experts but no router"));
  EXPECT_THAT(LoadError("unknown_tensor"),
              HasSubstr("\"mixlora.layers.0.mlp.magnitude_vector\" is not part of"));
  EXPECT_THAT(LoadError("too_many_layers"), HasSubstr("the base model has 3"));
  EXPECT_THAT(LoadError("expert_count"), HasSubstr("config says 5"));
  EXPECT_THAT(LoadError("long_tensor"), HasSubstr("torch.LongStorage"));
  EXPECT_THAT(LoadError("nested"), HasSubstr("\"inner\" is a dict, not a tensor"));
  EXPECT_THAT(LoadError("no_weights"), HasSubstr("no adapter_model.safetensors"));
  EXPECT_THAT(LoadError("does_not_exist"), HasSubstr("cannot open"));
  EXPECT_THAT(LoadError("symlinked_weights"), HasSubstr("outside the adapter root"));
}

// A router over adapters: its members load with it; members it cannot route are refused.
TEST_F(AdapterLoadTest, LoadsARouterOverAdaptersAndRefusesMembersItCannotRoute) {
  auto router = engine_->LoadAdapter(Fixtures() + "/router");
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_EQ((*router)->family, "mixture");
  ASSERT_NE((*router)->router, nullptr);
  EXPECT_EQ((*router)->router->members.size(), 3u);
  EXPECT_EQ((*router)->router->spec.routing, Routing::kTopK);
  EXPECT_EQ((*router)->router->spec.top_k, 2);
  for (const Weight& w : (*router)->router->routers) EXPECT_TRUE(w.defined());
  EXPECT_EQ((*router)->router->members[1]->name, "members/b");
  EXPECT_NE((*router)->router->members[1]->layers[0].ffn, nullptr);
  EXPECT_GT((*router)->bytes, (*router)->router->members[0]->bytes * 3);
  EXPECT_THAT(LoadError("router_attention"),
              HasSubstr("member members/b has LoRA on q_proj of layer 0"));
  EXPECT_THAT(LoadError("router_mixed_blocks"), HasSubstr("1 of 2 members have a MixLoRA block"));
  EXPECT_THAT(LoadError("router_escape"), HasSubstr("\"../mixlora\" is not a folder below"));
  EXPECT_THAT(LoadError("router_nested"), HasSubstr("a mixture's member cannot be a mixture"));
  EXPECT_THAT(LoadError("router_no_router"),
              HasSubstr("layer 1 has members that change its FFN but no router"));
}

TEST_F(AdapterLoadTest, NeverRunsAPickle) {
  std::filesystem::remove("/tmp/switchyard-pwned");
  EXPECT_THAT(LoadError("foreign_global"), HasSubstr("forbidden global posix.system"));
  EXPECT_FALSE(std::filesystem::exists("/tmp/switchyard-pwned"));
}

// Archives crafted to attack the reader (hostile_checkpoints.py): each was a SIGSEGV, an abort or
// an allocation of what the file claimed before these checks.
TEST_F(AdapterLoadTest, RefusesHostileArchivesWithoutCrashing) {
  EXPECT_THAT(LoadError("hostile_overflowing_strides"), HasSubstr("overflow"));
  EXPECT_THAT(LoadError("hostile_wrapping_storage"), HasSubstr("claims 4611686018427387904"));
  EXPECT_THAT(LoadError("hostile_zero_strides"), HasSubstr("zero stride"));
  EXPECT_THAT(LoadError("hostile_overlapping_views"),
              HasSubstr("a view may not be larger than its storage"));
  EXPECT_THAT(LoadError("hostile_claimed_entry_size"), HasSubstr("claims 4026531840 bytes"));
  EXPECT_THAT(LoadError("hostile_zip_bomb"), HasSubstr("claims 67108864 bytes"));
  EXPECT_THAT(LoadError("hostile_deep_nesting"), HasSubstr("not a dict of tensors"));
  EXPECT_THAT(LoadError("hostile_self_reference"), HasSubstr("holds a list"));
  EXPECT_THAT(LoadError("hostile_negative_stride"), HasSubstr("non-negative"));
  // Legal but wasteful: one tensor under a thousand names loads as views of one storage.
  EXPECT_THAT(LoadError("hostile_memo_aliasing"), HasSubstr("\"w0\" is not part of"));
}

TEST(TorchCheckpointTest, ViewsShareTheirStorageInsteadOfCopyingIt) {
  auto tensors = ReadTorchCheckpoint(Fixtures() + "/hostile_memo_aliasing/adapter_model.bin");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 1000u);
  for (const NamedTensor& t : *tensors) {
    EXPECT_EQ(t.tensor.raw(), (*tensors)[0].tensor.raw()) << t.name;
    EXPECT_EQ(t.tensor.numel(), 4096);
  }
}

TEST(TorchCheckpointTest, RefusesBytesThatAreNoArchive) {
  auto r = ReadTorchCheckpointBytes("not a zip at all");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a zip archive"));
}

TEST(AdapterConfigTest, ParsesFamiliesAndRefusesBadValues) {
  auto mix = ParseAdapterConfig(
      R"({"peft_type":"MIXLORA","routing_strategy":"mixlora-dynamic","num_experts":8,"r":16,
          "lora_alpha":32,"top_p":0.7,"expert_lora":{"r":8,"lora_alpha":8},"use_rslora":true,
          "target_modules":{"q_proj":true,"up_proj":false}})");
  ASSERT_TRUE(mix.ok()) << mix.status();
  EXPECT_EQ(mix->router.routing, Routing::kTopP);
  EXPECT_FLOAT_EQ(mix->router.top_p, 0.7f);
  EXPECT_EQ(mix->expert_r, 8);
  EXPECT_TRUE(mix->expert_rslora);  // inherited from the top level
  EXPECT_EQ(mix->targets, std::set<std::string>{"q_proj"});
  const auto error = [](const char* json) {
    auto c = ParseAdapterConfig(json);
    EXPECT_FALSE(c.ok()) << json;
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  EXPECT_THAT(error(R"({"peft_type":"MIXLORA","num_experts":4,"r":0,"lora_alpha":1})"),
              HasSubstr("r must be"));
  EXPECT_THAT(error(R"({"peft_type":"MIXLORA","num_experts":4,"r":4,"lora_alpha":1,"top_k":9})"),
              HasSubstr("top_k must be in [1, num_experts]"));
  EXPECT_THAT(error(R"({"peft_type":"LORA","r":4,"lora_alpha":1,"target_modules":["c_attn"]})"),
              HasSubstr("\"c_attn\""));
  EXPECT_THAT(error(R"({"peft_type":"LORA","r":4,"lora_alpha":1,"fan_in_fan_out":true})"),
              HasSubstr("fan_in_fan_out"));
  EXPECT_THAT(error(R"({"peft_type":"LORA","r":4,"lora_alpha":1,"rank_pattern":{"q":8}})"),
              HasSubstr("rank_pattern"));
  EXPECT_THAT(error(R"({"peft_type":"MHMOE_LORA","num_experts":4,"r":4,"lora_alpha":1})"),
              HasSubstr("missing \"num_heads\""));
  EXPECT_THAT(error("[]"), HasSubstr("not a JSON object"));
  // Found by adapter_config_fuzz: a per-layer top-k past int's range wrapped to a negative one.
  EXPECT_THAT(error(R"({"peft_type":"MOLA","num_experts":8,"top_k":[888888888881,2],"r":8,
                      "lora_alpha":6})"),
              HasSubstr("top_k entries must be in [1, num_experts]"));
}

// A registry over synthetic adapters of a given size, so eviction is easy to follow.
class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* n : {"a", "b", "c", "big"})
      std::filesystem::create_directories(root_.path() + "/" + n);
  }
  AdapterRegistry Make(size_t budget) {
    return AdapterRegistry({root_.path(), budget}, [this](const ConfinedDir& dir) {
      ++reads_;
      last_path_ = dir.path();
      last_file_ = dir.file();
      auto a = std::make_unique<AdapterWeights>();
      a->bytes = std::filesystem::path(dir.path()).filename() == "big" ? 300 : 100;
      a->family = "lora";
      return absl::StatusOr<std::unique_ptr<AdapterWeights>>(std::move(a));
    });
  }
  TempDir root_;
  int reads_ = 0;
  std::string last_path_, last_file_;
};

TEST_F(RegistryTest, SwapsAtomicallyAndOldHoldersKeepTheirVersion) {
  AdapterRegistry reg = Make(0);
  ASSERT_TRUE(reg.Load("x", "a", false).ok());
  auto held = reg.Acquire("x");
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(reg.Load("x", "b", false).status().code(), absl::StatusCode::kAlreadyExists);
  auto swapped = reg.Load("x", "b", true);
  ASSERT_TRUE(swapped.ok());
  auto fresh = reg.Acquire("x");
  EXPECT_GT((*fresh)->version, (*held)->version);
  EXPECT_EQ((*held)->name, "x");  // the old version is still alive for its holder
  EXPECT_EQ(reg.counters().swaps, 1);
}

TEST_F(RegistryTest, UnloadRefusesWhileInUseUnlessDraining) {
  AdapterRegistry reg = Make(0);
  ASSERT_TRUE(reg.Load("x", "a", false).ok());
  auto held = reg.Acquire("x");
  absl::Status busy = reg.Unload("x", false);
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(busy.message()), HasSubstr("in use by 1 request"));
  EXPECT_TRUE(reg.Unload("x", true).ok());
  EXPECT_EQ(reg.Acquire("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.resident_bytes(), 100u);  // still held by the request
  held->reset();
  EXPECT_EQ(reg.resident_bytes(), 0u);
}

TEST_F(RegistryTest, EvictsLeastRecentlyUsedIdleAdaptersAndReloadsThem) {
  AdapterRegistry reg = Make(250);
  ASSERT_TRUE(reg.Load("a", "a", false).ok());
  ASSERT_TRUE(reg.Load("b", "b", false).ok());
  ASSERT_TRUE(reg.Acquire("a").ok());           // a is now more recent than b
  ASSERT_TRUE(reg.Load("c", "c", false).ok());  // evicts b
  auto list = reg.List();
  EXPECT_TRUE(list[0].resident);   // a
  EXPECT_FALSE(list[1].resident);  // b
  EXPECT_EQ(reg.counters().evictions, 1);
  const int reads = reads_;
  auto b = reg.Acquire("b");  // transparent reload (evicts a, the least recent idle)
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(reads_, reads + 1);
  EXPECT_EQ(reg.counters().reloads, 1);
  EXPECT_LE(reg.resident_bytes(), 250u);
}

// The host tier: an evicted adapter whose files are kept is rebuilt without reading them; one whose
// copy the tier dropped (least recently used, past its budget) is read again.
TEST_F(RegistryTest, TheHostTierRebuildsEvictedAdaptersWithoutReadingTheirFiles) {
  int builds = 0, diagnosed = 0;
  const auto tiered = [&](size_t host_bytes) {
    AdapterRegistryOptions o{root_.path(), 250, host_bytes};
    return AdapterRegistry(
        o, AdapterRegistry::TieredLoader{
               [this](const ConfinedDir&) {
                 ++reads_;
                 auto f = std::make_unique<AdapterFiles>();
                 f->bytes = 100;
                 return absl::StatusOr<std::unique_ptr<AdapterFiles>>(std::move(f));
               },
               [&builds, &diagnosed](const AdapterFiles&, bool diagnose) {
                 ++builds;
                 auto a = std::make_unique<AdapterWeights>();
                 a->bytes = 100;
                 if (diagnose) {
                   ++diagnosed;
                   a->diagnostics = std::make_shared<AdapterDiagnostics>();
                 }
                 return absl::StatusOr<std::unique_ptr<AdapterWeights>>(std::move(a));
               }});
  };
  {
    AdapterRegistry reg = tiered(1000);
    for (const char* n : {"a", "b", "c"}) ASSERT_TRUE(reg.Load(n, n, false).ok());  // evicts a
    EXPECT_EQ(reads_, 3);
    EXPECT_FALSE(reg.List()[0].resident);
    EXPECT_TRUE(reg.List()[0].host_cached);
    const auto kept = reg.List()[0].diagnostics;
    auto again = reg.Acquire("a");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(reads_, 3) << "rebuilt from the host tier";
    EXPECT_EQ(builds, 4);
    // Its expert diagnostics are the first load's, not computed again.
    EXPECT_EQ(diagnosed, 3);
    EXPECT_EQ((*again)->diagnostics, kept);
    EXPECT_EQ(reg.List()[0].diagnostics, kept);
    EXPECT_EQ(reg.counters().reloads, 1);
    EXPECT_EQ(reg.counters().host_reloads, 1);
  }
  reads_ = 0;
  {
    AdapterRegistry reg = tiered(150);  // room for one adapter's files
    for (const char* n : {"a", "b", "c"}) ASSERT_TRUE(reg.Load(n, n, false).ok());
    const std::vector<AdapterInfo> list = reg.List();
    EXPECT_FALSE(list[0].host_cached);  // dropped for b, then b's for c
    EXPECT_FALSE(list[1].host_cached);
    EXPECT_TRUE(list[2].host_cached);
    ASSERT_TRUE(reg.Acquire("a").ok());
    EXPECT_EQ(reads_, 4) << "a's files were no longer kept: read again";
    EXPECT_EQ(reg.counters().host_reloads, 0);
    EXPECT_TRUE(reg.List()[0].host_cached) << "the reload kept a's files";
    EXPECT_FALSE(reg.List()[2].host_cached) << "c's, least recently used, made room for them";
  }
}

TEST_F(RegistryTest, BusyAndPinnedAdaptersAreNeverEvicted) {
  AdapterRegistry reg = Make(250);
  ASSERT_TRUE(reg.Load("a", "a", false).ok());
  ASSERT_TRUE(reg.Load("b", "b", false).ok());
  auto held = reg.Acquire("a");
  ASSERT_TRUE(reg.Pin("b", true).ok());
  auto full = reg.Load("c", "c", false);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reg.Load("big", "big", false).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(reg.Pin("b", false).ok());
  EXPECT_TRUE(reg.Load("c", "c", false).ok());  // b, now unpinned and idle, makes room
}

TEST_F(RegistryTest, PathsStayInsideTheRoot) {
  AdapterRegistry reg = Make(0);
  EXPECT_EQ(reg.Load("x", "../etc", false).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reg.Load("x", "/etc", false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.Load("x", "missing", false).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::create_directory_symlink("/etc", root_.path() + "/escape");
  auto escape = reg.Load("x", "escape", false);
  EXPECT_EQ(escape.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(escape.status().message()), HasSubstr("outside the adapter root"));
  // Single-file (.gguf) adapters: the same rules for the file, which must be a regular file.
  EXPECT_EQ(reg.Load("x", "../x.gguf", false).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reg.Load("x", "/x.gguf", false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.Load("x", "a/missing.gguf", false).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::create_directories(root_.path() + "/folder.gguf");
  EXPECT_EQ(reg.Load("x", "folder.gguf", false).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::create_symlink("/etc/hostname", root_.path() + "/out.gguf");
  EXPECT_EQ(reg.Load("x", "out.gguf", false).status().code(), absl::StatusCode::kPermissionDenied);
  std::ofstream(root_.path() + "/a/m.gguf") << "x";
  ASSERT_TRUE(reg.Load("x", "a/m.gguf", false).ok());
  EXPECT_EQ(last_file_, "m.gguf");
  EXPECT_EQ(std::filesystem::path(last_path_).filename(), "a");
}

TEST_F(RegistryTest, ConcurrentAcquiresOfAnEvictedAdapterReloadItOnce) {
  AdapterRegistry reg = Make(150);
  ASSERT_TRUE(reg.Load("a", "a", false).ok());
  ASSERT_TRUE(reg.Load("b", "b", false).ok());  // evicts a
  const int reads = reads_;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&] { EXPECT_TRUE(reg.Acquire("a").ok()); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(reads_, reads + 1);
}

}  // namespace
}  // namespace switchyard
