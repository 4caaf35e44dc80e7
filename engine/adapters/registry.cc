#include "engine/adapters/registry.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/log.h"
#include "engine/core/status_macros.h"

namespace switchyard {

AdapterRegistry::AdapterRegistry(AdapterRegistryOptions options, Loader loader)
    : options_(std::move(options)), loader_(std::move(loader)) {}

AdapterRegistry::AdapterRegistry(AdapterRegistryOptions options, TieredLoader loader)
    : options_(std::move(options)), tiered_(std::move(loader)) {}

absl::StatusOr<ConfinedDir> AdapterRegistry::Resolve(const std::string& path) const {
  if (options_.root.empty()) return absl::FailedPreconditionError("no adapter root is configured");
  SY_ASSIGN_OR_RETURN(ConfinedDir root, ConfinedDir::Open(options_.root));
  // A .gguf path is a single-file adapter (a llama.cpp LoRA); anything else is a folder.
  return absl::EndsWith(path, ".gguf") ? root.SubFile(path) : root.Sub(path);
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> AdapterRegistry::Read(
    const std::string& name, const std::string& path, std::shared_ptr<const AdapterFiles> files,
    std::shared_ptr<const AdapterFiles>* read_files,
    std::shared_ptr<const AdapterDiagnostics> diagnostics) {
  absl::StatusOr<std::unique_ptr<AdapterWeights>> adapter;
  const bool diagnose = diagnostics == nullptr;
  if (files != nullptr) {
    adapter = tiered_.build(*files, diagnose);
  } else {
    SY_ASSIGN_OR_RETURN(ConfinedDir dir, Resolve(path));
    if (tiered_.read) {
      absl::StatusOr<std::unique_ptr<AdapterFiles>> read = tiered_.read(dir);
      if (read.ok()) {
        files = std::move(*read);
        adapter = tiered_.build(*files, diagnose);
        if (read_files != nullptr) *read_files = files;
      } else {
        adapter = read.status();
      }
    } else {
      adapter = loader_(dir);
    }
  }
  if (!adapter.ok()) {
    return absl::Status(adapter.status().code(),
                        absl::StrCat("adapter \"", name, "\": ", adapter.status().message()));
  }
  (*adapter)->name = name;
  if ((*adapter)->diagnostics == nullptr) (*adapter)->diagnostics = std::move(diagnostics);
  return std::move(*adapter);
}

void AdapterRegistry::KeepHostCopy(const std::string& name, Entry& e,
                                   std::shared_ptr<const AdapterFiles> files) {
  e.host = nullptr;
  if (files == nullptr || options_.host_cache_bytes == 0 ||
      files->bytes > options_.host_cache_bytes) {
    return;
  }
  const auto held = [&] {
    size_t bytes = 0;
    for (const auto& [n, x] : entries_) bytes += x.host ? x.host->bytes : 0;
    return bytes;
  };
  while (held() + files->bytes > options_.host_cache_bytes) {
    Entry* victim = nullptr;
    for (auto& [n, x] : entries_) {
      if (x.host && n != name && (victim == nullptr || x.last_used < victim->last_used)) {
        victim = &x;
      }
    }
    if (victim == nullptr) return;
    victim->host = nullptr;
  }
  e.host = std::move(files);
}

size_t AdapterRegistry::ResidentBytesLocked() const {
  size_t bytes = 0;
  for (const auto& [name, e] : entries_) {
    if (e.current) bytes += e.current->bytes;
  }
  for (const auto& w : retired_) {
    if (auto p = w.lock()) bytes += p->bytes;
  }
  return bytes;
}

bool AdapterRegistry::MakeRoom(size_t need, const std::string& keep) {
  if (options_.memory_budget_bytes == 0) return true;
  std::erase_if(retired_, [](const auto& w) { return w.expired(); });
  while (ResidentBytesLocked() + need > options_.memory_budget_bytes) {
    Entry* victim = nullptr;
    std::string victim_name;
    for (auto& [name, e] : entries_) {
      // Idle: only the registry holds it.
      if (!e.current || e.pinned || name == keep || e.current.use_count() > 1) continue;
      if (victim == nullptr || e.last_used < victim->last_used) {
        victim = &e;
        victim_name = name;
      }
    }
    if (victim == nullptr) return false;
    SY_LOG(kInfo, "adapter %s evicted (least recently used, %d bytes)", victim_name,
           victim->current->bytes);
    victim->current.reset();
    ++victim->evictions;
    ++counters_.evictions;
  }
  return true;
}

absl::StatusOr<AdapterInfo> AdapterRegistry::Load(const std::string& name, const std::string& path,
                                                  bool replace) {
  if (name.empty() || name.size() > 256) {
    return absl::InvalidArgumentError("adapter name must be 1 to 256 characters");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.contains(name) && !replace) {
      return absl::AlreadyExistsError(
          absl::StrCat("adapter \"", name, "\" is already loaded; ask for a replace to swap it"));
    }
  }
  std::shared_ptr<const AdapterFiles> files;
  SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterWeights> loaded, Read(name, path, nullptr, &files));
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.contains(name) && !replace) {
    return absl::AlreadyExistsError(absl::StrCat("adapter \"", name, "\" was loaded meanwhile"));
  }
  // The version being replaced stays until its last request: count it, and free room around it.
  auto it = entries_.find(name);
  std::shared_ptr<const AdapterWeights> old = it != entries_.end() ? it->second.current : nullptr;
  size_t old_bytes = 0;
  if (old && old.use_count() == 1) old_bytes = old->bytes;  // freed by the swap itself
  if (options_.memory_budget_bytes > 0 && loaded->bytes > options_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("adapter \"", name, "\" needs ", loaded->bytes,
                                                     " bytes; the adapter memory budget is ",
                                                     options_.memory_budget_bytes));
  }
  if (!MakeRoom(loaded->bytes > old_bytes ? loaded->bytes - old_bytes : 0, name)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("adapter memory budget of ", options_.memory_budget_bytes,
                     " bytes is held by adapters "
                     "in use or pinned; adapter \"",
                     name, "\" (", loaded->bytes, " bytes) does not fit"));
  }
  loaded->version = next_version_++;
  Entry& e = entries_[name];
  if (old && old.use_count() > 1) retired_.push_back(old);
  const bool swapped = e.version != 0;
  e.path = path;
  e.version = loaded->version;
  e.family = loaded->family;
  e.format = loaded->format;
  e.bytes = loaded->bytes;
  e.diagnostics = loaded->diagnostics;
  e.current = std::shared_ptr<const AdapterWeights>(std::move(loaded));
  e.last_used = ++clock_;
  ++e.loads;
  if (!e.reload) e.reload = std::make_shared<std::mutex>();
  KeepHostCopy(name, e, std::move(files));
  ++counters_.loads;
  if (swapped) ++counters_.swaps;
  SY_LOG(kInfo, "adapter %s %s: %s, %s, version %d, %d bytes", name, swapped ? "swapped" : "loaded",
         e.family, e.format, e.version, e.bytes);
  return InfoLocked(name, e);
}

absl::Status AdapterRegistry::Unload(const std::string& name, bool drain) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
  }
  const auto& current = it->second.current;
  const long holders = current ? current.use_count() - 1 : 0;
  if (holders > 0 && !drain) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter \"", name, "\" is in use by ", holders,
                     " request(s); unload with drain to free it when they finish"));
  }
  if (holders > 0) retired_.push_back(current);
  entries_.erase(it);
  ++counters_.unloads;
  SY_LOG(kInfo, "adapter %s unloaded%s", name, holders > 0 ? " (draining)" : "");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> AdapterRegistry::Acquire(
    const std::string& name) {
  std::shared_ptr<std::mutex> reload;
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
    }
    it->second.last_used = ++clock_;
    if (it->second.current) return it->second.current;
    reload = it->second.reload;
    path = it->second.path;
  }
  std::shared_ptr<const AdapterFiles> host;
  std::shared_ptr<const AdapterDiagnostics> diagnostics;  // kept from its first load
  // Evicted: reload it, once, whoever asks first.
  std::lock_guard<std::mutex> reload_lock(*reload);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" was unloaded"));
    }
    if (it->second.current) return it->second.current;
    host = it->second.host;
    diagnostics = it->second.diagnostics;
  }
  std::shared_ptr<const AdapterFiles> files;
  SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterWeights> loaded,
                      Read(name, path, host, &files, diagnostics));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" was unloaded"));
  }
  if (it->second.current) return it->second.current;
  if (!MakeRoom(loaded->bytes, name)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("adapter \"", name,
                     "\" was evicted and the adapter memory budget is held by adapters "
                     "in use or pinned"));
  }
  loaded->version = next_version_++;
  Entry& e = it->second;
  e.version = loaded->version;
  e.bytes = loaded->bytes;
  e.current = std::shared_ptr<const AdapterWeights>(std::move(loaded));
  ++e.loads;
  ++counters_.reloads;
  if (host != nullptr) {
    ++counters_.host_reloads;
  } else {
    KeepHostCopy(name, e, std::move(files));
  }
  SY_LOG(kInfo, "adapter %s reloaded after eviction from %s (version %d)", name,
         host != nullptr ? "the host tier" : "its files", e.version);
  return e.current;
}

absl::Status AdapterRegistry::Pin(const std::string& name, bool pinned) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
  }
  it->second.pinned = pinned;
  return absl::OkStatus();
}

AdapterInfo AdapterRegistry::InfoLocked(const std::string& name, const Entry& e) const {
  AdapterInfo info;
  info.name = name;
  info.path = e.path;
  info.family = e.family;
  info.format = e.format;
  info.version = e.version;
  info.bytes = e.bytes;
  info.resident = e.current != nullptr;
  info.host_cached = e.host != nullptr;
  info.pinned = e.pinned;
  info.in_use = e.current ? e.current.use_count() - 1 : 0;
  info.loads = e.loads;
  info.evictions = e.evictions;
  info.diagnostics = e.diagnostics;
  return info;
}

std::vector<AdapterInfo> AdapterRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, e] : entries_) out.push_back(InfoLocked(name, e));
  return out;
}

AdapterRegistryCounters AdapterRegistry::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

size_t AdapterRegistry::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ResidentBytesLocked();
}

}  // namespace switchyard
