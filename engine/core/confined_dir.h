// Files opened strictly below a folder chosen by the operator (the adapter root), so that what a
// client names, or what a stranger's folder holds, cannot reach outside it. Each open is one
// openat2(RESOLVE_BENEATH) call against the root's descriptor: the kernel resolves the whole
// path, symlinks included, and refuses any step that leaves the root, so there is no window
// between a check and the open. Symlinks that stay below the root (a Hugging Face cache's
// snapshots → blobs) work. Where openat2 is missing (Linux < 5.6), every component is opened
// with O_NOFOLLOW instead, and symlinks are refused altogether.
//
// Thread-safety: immutable; copies share the root's descriptor.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

class ConfinedDir {
 public:
  // Opens `root` itself (the operator's choice, so symlinks on the way to it are followed).
  static absl::StatusOr<ConfinedDir> Open(const std::string& root);

  // The folder `relative` below this one, which must exist, be a folder, and lie below the root.
  // INVALID_ARGUMENT for an absolute path, PERMISSION_DENIED for one that leaves the root (with
  // "..", or through a symlink), NOT_FOUND for one that does not exist.
  absl::StatusOr<ConfinedDir> Sub(const std::string& relative) const;
  // For a single-file adapter: the folder holding the regular file `relative` (below the root, as
  // Sub's folders), with file() naming the file in it.
  absl::StatusOr<ConfinedDir> SubFile(const std::string& relative) const;
  // The file SubFile named; empty for a folder.
  const std::string& file() const { return file_; }

  // A regular file in this folder (a name or a relative path), opened read-only.
  absl::StatusOr<UniqueFd> OpenFile(absl::string_view name) const;
  bool Exists(absl::string_view name) const;
  // The whole file, refused with RESOURCE_EXHAUSTED past `max_bytes`.
  absl::StatusOr<std::string> ReadFile(absl::string_view name, size_t max_bytes) const;

  // For messages: the root joined with the relative folder (and `name`).
  std::string path() const;
  std::string PathOf(absl::string_view name) const;

 private:
  ConfinedDir(std::shared_ptr<const UniqueFd> root, std::string root_path, std::string relative)
      : root_(std::move(root)), root_path_(std::move(root_path)), relative_(std::move(relative)) {}
  absl::StatusOr<UniqueFd> OpenBeneath(const std::string& relative, bool directory) const;

  std::shared_ptr<const UniqueFd> root_;
  std::string root_path_;
  std::string relative_;  // "" for the root itself, else "a/b"
  std::string file_;
};

// Reads all of `fd` (a regular file), refused with RESOURCE_EXHAUSTED past `max_bytes`; `what`
// names the file in messages.
absl::StatusOr<std::string> ReadAll(int fd, size_t max_bytes, absl::string_view what);

}  // namespace switchyard
