#include "engine/model/safetensors.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

std::string Image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

TEST(SafetensorsTest, ReadsValidFile) {
  const float values[] = {1, 2, 3, 4, 5, 6};
  std::string data(reinterpret_cast<const char*>(values), sizeof(values));
  auto file = SafetensorsFile::FromBytes(
      Image(
          R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
          data),
      "ok");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  auto t = (*file)->Get("w");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), (Shape{2, 3}));
  EXPECT_EQ(t->data<float>()[5], 6.0f);
}

struct BadCase {
  std::string name;
  std::string bytes;
  std::string message;
};

class SafetensorsRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(SafetensorsRejects, WithAClearError) {
  auto file = SafetensorsFile::FromBytes(GetParam().bytes, "f");
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(GetParam().message));
}

std::string HugeHeaderLength() {
  std::string out(8, '\0');
  const uint64_t n = uint64_t{1} << 40;
  std::memcpy(out.data(), &n, 8);
  return out + "{}";
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, SafetensorsRejects,
    ::testing::Values(
        BadCase{"empty", "", "shorter than its 8-byte header length"},
        BadCase{"header_cap", HugeHeaderLength(), "exceeds the"},
        BadCase{"header_past_end", Image("{}", "").substr(0, 9), "runs past the end"},
        BadCase{"not_json", Image("{nope", ""), "invalid JSON"},
        BadCase{"not_object", Image("[1,2]", ""), "not a JSON object"},
        BadCase{"truncated_data",
                Image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", "12345678"),
                "truncated file"},
        BadCase{"size_mismatch",
                Image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
                      std::string(16, '\0')),
                "needs 12 bytes but data_offsets span 16"},
        BadCase{"overlap",
                Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      std::string(12, '\0')),
                "overlap"},
        BadCase{
            "unknown_dtype",
            Image(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')),
            "unknown dtype \"Q4\""},
        BadCase{"negative_dim",
                Image(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                      std::string(4, '\0')),
                "non-negative"},
        BadCase{"reversed_offsets",
                Image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})",
                      std::string(4, '\0')),
                "begin after they end"},
        BadCase{
            "shape_overflow",
            Image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                  std::string(4, '\0')),
            "too large"},
        BadCase{"missing_offsets", Image(R"({"w":{"dtype":"F32","shape":[1]}})", ""),
                "data_offsets must be [begin, end]"}),
    [](const auto& info) { return info.param.name; });

TEST(SafetensorsTest, RefusesUnsupportedDtypeOnlyWhenRead) {
  auto file = SafetensorsFile::FromBytes(
      Image(R"({"step":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "f");
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->Get("step");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("has dtype I64"));
}

TEST(TensorSetTest, NamesMissingAndMisshapedTensors) {
  auto file = SafetensorsFile::FromBytes(
      Image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "f");
  ASSERT_TRUE(file.ok());
  TensorSet set = TensorSet::FromFile(*file);
  auto missing = set.Get("model.norm.weight", {2});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("\"model.norm.weight\""));
  auto shaped = set.Get("w", {3});
  ASSERT_FALSE(shaped.ok());
  EXPECT_THAT(std::string(shaped.status().message()),
              HasSubstr("tensor \"w\" has shape [2], expected [3]"));
}

TEST(TensorSetTest, ReadsShardsAndRejectsBadIndexes) {
  TempDir dir;
  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir.path() + "/" + name, std::ios::binary) << bytes;
  };
  write("a.safetensors",
        Image(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  write("b.safetensors",
        Image(R"({"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  write("model.safetensors.index.json",
        R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  auto set = TensorSet::OpenFolder(dir.path());
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE(set->Get("x", {1}).ok());
  EXPECT_TRUE(set->Get("y", {1}).ok());

  write("model.safetensors.index.json", R"({"weight_map":{"x":"b.safetensors"}})");
  auto wrong = TensorSet::OpenFolder(dir.path());
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("\"x\" is not in shard"));

  write("model.safetensors.index.json", R"({"weight_map":{"x":"../a.safetensors"}})");
  auto escape = TensorSet::OpenFolder(dir.path());
  ASSERT_FALSE(escape.ok());
  EXPECT_THAT(std::string(escape.status().message()), HasSubstr("plain file name"));

  std::filesystem::remove(dir.path() + "/model.safetensors.index.json");
  auto none = TensorSet::OpenFolder(dir.path());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace switchyard
