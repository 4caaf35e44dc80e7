// ConfinedDir: nothing a client names or a folder holds opens a file outside the adapter root.
#include "engine/core/confined_dir.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ConfinedDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/root";
    fs::create_directories(root_ + "/a/sub");
    fs::create_directories(root_ + "/blobs");
    fs::create_directories(tmp_.path() + "/outside");
    Write(root_ + "/a/adapter_config.json", "{}");
    Write(root_ + "/blobs/weights", "weights");
    Write(tmp_.path() + "/outside/secret", "secret");
    fs::create_directory_symlink("../outside", root_ + "/escape");
    fs::create_directory_symlink("a", root_ + "/alias");
    fs::create_symlink("../../outside/secret", root_ + "/a/leak");
    fs::create_symlink("../blobs/weights", root_ + "/a/blob");  // as in a Hugging Face cache
    fs::create_symlink(root_ + "/a/adapter_config.json", root_ + "/a/absolute");
    mkfifo((root_ + "/a/fifo").c_str(), 0600);
    dir_ = *ConfinedDir::Open(root_);
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }
  absl::StatusCode SubCode(const std::string& p) { return dir_.Sub(p).status().code(); }
  absl::StatusCode FileCode(const std::string& p) {
    return dir_.Sub("a")->OpenFile(p).status().code();
  }

  TempDir tmp_;
  std::string root_;
  ConfinedDir dir_ = *ConfinedDir::Open("/");
};

TEST_F(ConfinedDirTest, OpensFoldersAndFilesBelowTheRoot) {
  auto a = dir_.Sub("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a->ReadFile("adapter_config.json", 100), "{}");
  EXPECT_EQ(*a->ReadFile("blob", 100), "weights");  // a symlink that stays below the root
  EXPECT_TRUE(dir_.Sub("alias").ok());
  EXPECT_TRUE(dir_.Sub("a/sub").ok());
  EXPECT_TRUE(dir_.Sub("./a/").ok());
  EXPECT_EQ(a->path(), root_ + "/a");
}

TEST_F(ConfinedDirTest, RefusesEveryWayOut) {
  EXPECT_EQ(SubCode("../root/a"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(SubCode("a/../../root"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(SubCode("/etc"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SubCode(""), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SubCode("."), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(SubCode("escape"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(SubCode("missing"), absl::StatusCode::kNotFound);
  EXPECT_EQ(FileCode("leak"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(FileCode("absolute"), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(dir_.Sub("escape").status().message()), HasSubstr("outside"));
}

TEST_F(ConfinedDirTest, RefusesWhatIsNoRegularFileWithoutWaiting) {
  EXPECT_EQ(FileCode("sub"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FileCode("fifo"), absl::StatusCode::kInvalidArgument);  // would block a reader
  EXPECT_EQ(SubCode("a/adapter_config.json"), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(dir_.Sub("a")->Exists("nothing"));
  EXPECT_TRUE(dir_.Sub("a")->Exists("adapter_config.json"));
}

TEST_F(ConfinedDirTest, ReadsNoMoreThanTheLimit) {
  auto r = dir_.Sub("a")->ReadFile("adapter_config.json", 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace switchyard
