#include "engine/core/confined_dir.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/core/status_macros.h"

namespace switchyard {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// Splits a relative path into its components, refusing absolute paths and "..".
absl::StatusOr<std::vector<std::string>> Components(const std::string& relative) {
  if (relative.empty() || relative[0] == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter path \"", relative, "\" must be relative to the adapter root"));
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(relative, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      return absl::PermissionDeniedError(
          absl::StrCat("adapter path \"", relative, "\" leaves the adapter root"));
    }
    parts.emplace_back(part);
  }
  return parts;
}

absl::Status OpenError(const std::string& shown, int err) {
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(absl::StrCat(shown, ": missing (", std::strerror(err), ")"));
    case ENOTDIR:
      return absl::InvalidArgumentError(absl::StrCat(shown, ": not a folder"));
    case EXDEV:
    case ELOOP:
      return absl::PermissionDeniedError(
          absl::StrCat(shown, ": resolves outside the adapter root (through a symlink)"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(shown, ": ", std::strerror(err)));
    default:
      return absl::InvalidArgumentError(absl::StrCat(shown, ": ", std::strerror(err)));
  }
}

// openat2 with RESOLVE_BENEATH; -1 with errno ENOSYS where the kernel lacks it.
int OpenAt2Beneath(int dirfd, const std::string& path, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int fd;
  do {
    fd = static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
  } while (fd < 0 && errno == EAGAIN);
  return fd;
}

// The fallback: one component at a time, never following a symlink.
int OpenNoFollow(int dirfd, const std::vector<std::string>& parts, int flags) {
  int cur = dirfd;
  UniqueFd held;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const int next =
        ::openat(cur, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -1;
    held = UniqueFd(next);
    cur = next;
  }
  return ::openat(cur, parts.empty() ? "." : parts.back().c_str(), flags | O_NOFOLLOW);
}

}  // namespace

absl::StatusOr<ConfinedDir> ConfinedDir::Open(const std::string& root) {
  const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter root ", root, ": ", std::strerror(errno)));
  }
  return ConfinedDir(std::make_shared<const UniqueFd>(fd), root, "");
}

absl::StatusOr<UniqueFd> ConfinedDir::OpenBeneath(const std::string& relative,
                                                  bool directory) const {
  SY_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(relative));
  std::string joined = relative_;
  for (const std::string& p : parts) absl::StrAppend(&joined, joined.empty() ? "" : "/", p);
  if (joined.empty()) joined = ".";
  // O_NONBLOCK: opening a FIFO planted where a file should be must not wait for a writer (it is
  // refused below as not a regular file); it does nothing for regular files and folders.
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (directory ? O_DIRECTORY : 0);
  int fd = OpenAt2Beneath(root_->get(), joined, flags);
  if (fd < 0 && errno == ENOSYS) {
    SY_ASSIGN_OR_RETURN(std::vector<std::string> all, Components(joined));
    fd = OpenNoFollow(root_->get(), all, flags);
  }
  if (fd < 0) return OpenError(absl::StrCat("adapter path \"", relative, "\""), errno);
  UniqueFd owned(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0 || (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) {
    return absl::InvalidArgumentError(
        absl::StrCat(PathOf(relative), " is not a ", directory ? "folder" : "regular file"));
  }
  return owned;
}

absl::StatusOr<ConfinedDir> ConfinedDir::Sub(const std::string& relative) const {
  SY_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(relative));
  if (parts.empty() && relative_.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("adapter path \"", relative, "\" is the adapter root itself"));
  }
  SY_RETURN_IF_ERROR(OpenBeneath(relative, /*directory=*/true).status());
  std::string joined = relative_;
  for (const std::string& p : parts) absl::StrAppend(&joined, joined.empty() ? "" : "/", p);
  return ConfinedDir(root_, root_path_, joined);
}

absl::StatusOr<ConfinedDir> ConfinedDir::SubFile(const std::string& relative) const {
  SY_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(relative));
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter path \"", relative, "\" names no file"));
  }
  SY_RETURN_IF_ERROR(OpenBeneath(relative, /*directory=*/false).status());
  std::string joined = relative_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    absl::StrAppend(&joined, joined.empty() ? "" : "/", parts[i]);
  }
  ConfinedDir dir(root_, root_path_, joined);
  dir.file_ = parts.back();
  return dir;
}

absl::StatusOr<UniqueFd> ConfinedDir::OpenFile(absl::string_view name) const {
  return OpenBeneath(std::string(name), /*directory=*/false);
}

bool ConfinedDir::Exists(absl::string_view name) const {
  absl::StatusOr<UniqueFd> fd = OpenFile(name);
  return fd.ok() || fd.status().code() != absl::StatusCode::kNotFound;
}

absl::StatusOr<std::string> ConfinedDir::ReadFile(absl::string_view name, size_t max_bytes) const {
  SY_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(name));
  return ReadAll(fd.get(), max_bytes, PathOf(name));
}

std::string ConfinedDir::path() const {
  return relative_.empty() ? root_path_ : absl::StrCat(root_path_, "/", relative_);
}

std::string ConfinedDir::PathOf(absl::string_view name) const {
  return absl::StrCat(path(), "/", name);
}

absl::StatusOr<std::string> ReadAll(int fd, size_t max_bytes, absl::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", st.st_size, " bytes exceed the limit of ", max_bytes));
  }
  // Read what is there, not what fstat said: the file may change under us.
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::DataLossError(absl::StrCat(what, ": ", std::strerror(errno)));
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": more than the limit of ", max_bytes, " bytes"));
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace switchyard
