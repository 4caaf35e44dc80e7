// The GGUF reader on files built here: every value type and a tensor read back; every prefix of a
// valid file, random corruptions and a list of hostile headers refused with a Status (never a
// crash); the model translation's refusals name what is missing or unsupported.

#include "engine/model/gguf.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

class Builder {
 public:
  Builder& U32(uint32_t v) { return Raw(&v, 4); }
  Builder& U64(uint64_t v) { return Raw(&v, 8); }
  Builder& Str(const std::string& s) {
    U64(s.size());
    bytes_ += s;
    return *this;
  }
  Builder& Raw(const void* p, size_t n) {
    bytes_.append(static_cast<const char*>(p), n);
    return *this;
  }
  Builder& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    bytes_ += "GGUF";
    return U32(version).U64(tensors).U64(kvs);
  }
  Builder& KvU32(const std::string& key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Builder& KvStr(const std::string& key, const std::string& v) { return Str(key).U32(8).Str(v); }
  Builder& Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                  uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  Builder& Align(size_t a = 32) {
    bytes_.resize((bytes_.size() + a - 1) / a * a, '\0');
    return *this;
  }
  Builder& Data(size_t n, char fill) {
    bytes_.append(n, fill);
    return *this;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

// A valid file: metadata of several types and two F32 tensors [2, 4] and a Q8_0 one [1, 32].
std::string ValidFile() {
  Builder b;
  b.Header(3, 4).KvStr("general.architecture", "llama").KvU32("test.u32", 7);
  b.Str("test.f32").U32(6);
  const float f = 0.25f;
  b.Raw(&f, 4);
  b.Str("test.strings").U32(9).U32(8).U64(2).Str("a").Str("bc");
  b.Tensor("a", {4, 2}, 0, 0).Tensor("b", {4, 2}, 0, 32).Tensor("q", {32, 1}, 8, 64).Align();
  b.Data(32, '\1').Data(32, '\2').Data(34, '\3');
  return b.bytes();
}

absl::Status Parse(const std::string& bytes) {
  return GgufFile::FromBytes(bytes, "test.gguf").status();
}

TEST(GgufTest, ReadsMetadataAndTensors) {
  auto file = GgufFile::FromBytes(ValidFile(), "test.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*file)->GetInt("test.u32"), 7);
  EXPECT_EQ(*(*file)->GetNumber("test.f32"), 0.25);
  EXPECT_EQ((*file)->Find("test.strings")->strings, (std::vector<std::string>{"a", "bc"}));
  EXPECT_FALSE((*file)->GetInt("test.f32").ok());
  EXPECT_FALSE((*file)->GetString("missing").ok());
  const GgufTensor* b = (*file)->FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (Shape{2, 4}));
  auto data = (*file)->Data(*b);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->dtype(), DType::kF32);
  EXPECT_EQ(data->data<char>()[0], '\2');
  const GgufTensor* q = (*file)->FindTensor("q");
  EXPECT_EQ(q->type.quant, QuantType::kQ8_0);
  auto blocks = (*file)->Data(*q);
  EXPECT_EQ(blocks->dtype(), DType::kU8);
  EXPECT_EQ(blocks->shape(), (Shape{1, 34}));
}

TEST(GgufTest, EveryPrefixOfAValidFileIsRefused) {
  const std::string valid = ValidFile();
  ASSERT_TRUE(Parse(valid).ok());
  for (size_t n = 0; n < valid.size(); ++n) {
    EXPECT_FALSE(Parse(valid.substr(0, n)).ok()) << "prefix of " << n << " bytes";
  }
}

TEST(GgufTest, RandomCorruptionsNeverCrash) {
  const std::string valid = ValidFile();
  std::mt19937 rng(1);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = valid;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
      bad[rng() % bad.size()] = static_cast<char>(rng());
    }
    refused += Parse(bad).ok() ? 0 : 1;
  }
  EXPECT_GT(refused, 100);
}

TEST(GgufTest, HostileHeadersAreRefusedWithTheirReason) {
  struct Case {
    const char* name;
    std::string bytes;
    const char* reason;
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, const Builder& b, const char* reason) {
    cases.push_back({name, b.bytes(), reason});
  };
  add("magic", Builder().Raw("GGUX", 4).U32(3).U64(0).U64(0), "magic");
  add("version", Builder().Header(0, 0, 1), "version 1");
  add("kv count", Builder().Header(0, uint64_t{1} << 60), "cannot fit");
  add("tensor count", Builder().Header(uint64_t{1} << 60, 0), "cannot fit");
  add("string length", Builder().Header(0, 1).U64(uint64_t{1} << 62).Data(64, 'a'), "claims");
  add("nested array", Builder().Header(0, 1).Str("k").U32(9).U32(9).U64(1).Data(64, 0), "nested");
  add("value type", Builder().Header(0, 1).Str("k").U32(77).Data(16, 0), "unknown value type");
  add("bool", Builder().Header(0, 1).Str("k").U32(7).Data(1, 2).Data(16, 0), "bool");
  add("array length", Builder().Header(0, 1).Str("k").U32(9).U32(6).U64(uint64_t{1} << 40),
      "longer than");
  add("duplicate key", Builder().Header(0, 2).KvU32("k", 1).KvU32("k", 2), "twice");
  add("rank", Builder().Header(1, 0).Tensor("t", {1, 1, 1, 1, 1}, 0, 0).Align().Data(32, 0),
      "rank");
  add("zero dim", Builder().Header(1, 0).Tensor("t", {0}, 0, 0).Align(), "dimension 0");
  add("size overflow",
      Builder().Header(1, 0).Tensor("t", {1u << 30, 1u << 30, 1u << 30, 1u << 30}, 0, 0).Align(),
      "overflows");
  add("unsupported type", Builder().Header(1, 0).Tensor("t", {32}, 3, 0).Align().Data(32, 0),
      "not supported");
  add("partial block", Builder().Header(1, 0).Tensor("t", {40}, 8, 0).Align().Data(64, 0),
      "blocks");
  add("misaligned", Builder().Header(1, 0).Tensor("t", {4}, 0, 4).Align().Data(64, 0),
      "not aligned");
  add("outside", Builder().Header(1, 0).Tensor("t", {64}, 0, 0).Align().Data(32, 0), "outside");
  add("overlap",
      Builder().Header(2, 0).Tensor("a", {16}, 0, 0).Tensor("b", {16}, 0, 32).Align().Data(96, 0),
      "overlap");
  add("duplicate tensor",
      Builder().Header(2, 0).Tensor("a", {8}, 0, 0).Tensor("a", {8}, 0, 32).Align().Data(64, 0),
      "twice");
  add("alignment", Builder().Header(0, 1).KvU32("general.alignment", 3), "alignment");
  for (const Case& c : cases) {
    const absl::Status s = Parse(c.bytes);
    EXPECT_FALSE(s.ok()) << c.name;
    EXPECT_NE(s.message().find(c.reason), absl::string_view::npos) << c.name << ": " << s;
  }
}

TEST(GgufTest, SentencePieceMergesComeFromScoresAndHugePiecesCannotStallTheLoad) {
  const std::vector<std::string> tokens = {
      "<unk>", "<s>", "</s>", "\u2581", "a", "b", "ab", "\u2581ab", std::string(4 << 20, 'x')};
  const std::vector<float> scores = {0, 0, 0, -1, -2, -3, -4, -5, -6};
  const std::vector<int32_t> types = {2, 3, 3, 1, 1, 1, 1, 1, 1};
  Builder b;
  b.Header(0, 6).KvStr("tokenizer.ggml.model", "llama");
  b.Str("tokenizer.ggml.tokens").U32(9).U32(8).U64(tokens.size());
  for (const std::string& t : tokens) b.Str(t);
  b.Str("tokenizer.ggml.scores").U32(9).U32(6).U64(scores.size());
  for (float f : scores) b.Raw(&f, 4);
  b.Str("tokenizer.ggml.token_type").U32(9).U32(5).U64(types.size());
  for (int32_t t : types) b.Raw(&t, 4);
  b.KvU32("tokenizer.ggml.bos_token_id", 1).KvU32("tokenizer.ggml.eos_token_id", 2);
  auto file = GgufFile::FromBytes(b.bytes(), "spm.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto files = GgufTokenizerFiles(**file);  // a 4 MiB piece split every way would take hours
  ASSERT_TRUE(files.ok()) << files.status();
  auto tokenizer = Tokenizer::FromJson(files->tokenizer_json, files->tokenizer_config_json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "ab" is normalized to "\u2581ab"; the merges recovered from the scores, (a b) then
  // (\u2581 ab), make it one piece. "ba" has no merge.
  EXPECT_EQ(*(*tokenizer)->Encode("ab"), (std::vector<int32_t>{1, 7}));
  EXPECT_EQ(*(*tokenizer)->Encode("ba", {.add_special_tokens = false}),
            (std::vector<int32_t>{3, 5, 4}));
}

TEST(GgufTest, ModelTranslationNamesWhatIsMissingOrUnsupported) {
  Builder arch;
  arch.Header(0, 1).KvStr("general.architecture", "gemma2");
  auto gemma = GgufFile::FromBytes(arch.bytes(), "g.gguf");
  ASSERT_TRUE(gemma.ok());
  absl::StatusOr<ModelConfig> c = GgufModelConfig(**gemma);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("gemma2"), absl::string_view::npos);

  Builder partial;
  partial.Header(0, 2).KvStr("general.architecture", "llama").KvU32("llama.block_count", 2);
  auto llama = GgufFile::FromBytes(partial.bytes(), "l.gguf");
  c = GgufModelConfig(**llama);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("llama.embedding_length"), absl::string_view::npos)
      << c.status();

  Builder tok;
  tok.Header(0, 1).KvStr("tokenizer.ggml.model", "bert");
  auto bert = GgufFile::FromBytes(tok.bytes(), "t.gguf");
  EXPECT_FALSE(GgufTokenizerFiles(**bert).ok());
}

}  // namespace
}  // namespace switchyard
