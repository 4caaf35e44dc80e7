// The adapters a server knows, by name: load, unload and atomic hot swap while traffic flows, a
// memory budget with LRU eviction of idle adapters and transparent reload, and pinning.
//
// Requests hold a std::shared_ptr<const AdapterWeights> from admission to finish: a swap publishes
// a new version and leaves the old one to its last request; eviction and unload never free weights
// a request holds. File reading, validation and weight preparation run on the calling thread (an
// API or loader thread, never the engine thread) outside the lock; only the publish is locked.
//
// Thread-safety: every method is safe to call from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/adapters/adapter.h"
#include "engine/adapters/loader.h"
#include "engine/core/confined_dir.h"

namespace switchyard {

struct AdapterRegistryOptions {
  std::string root;                // adapter folders must lie below it (no "..", no symlink escape)
  size_t memory_budget_bytes = 0;  // resident adapters' weights; 0: unlimited
  // Host tier (with a TieredLoader): the files of adapters, read and checked, are kept in host
  // memory up to this many bytes (least recently used dropped first), so that an evicted adapter
  // is rebuilt from them without reading its files again. 0: off.
  size_t host_cache_bytes = 0;
};

struct AdapterInfo {
  std::string name;
  std::string path;  // relative to the root
  std::string family;
  std::string format;
  uint64_t version = 0;
  size_t bytes = 0;
  bool resident = false;
  bool host_cached = false;  // its files are in the host tier
  bool pinned = false;
  int64_t in_use = 0;     // requests holding the current version
  int64_t loads = 0;      // including reloads after eviction
  int64_t evictions = 0;  // of this name since it was first loaded
  // The current version's expert diagnostics (kept while it is evicted); null in tests whose
  // loader makes adapters by hand.
  std::shared_ptr<const AdapterDiagnostics> diagnostics;
};

struct AdapterRegistryCounters {
  int64_t loads = 0, unloads = 0, swaps = 0, evictions = 0, reloads = 0;
  int64_t host_reloads = 0;  // reloads built from the host tier (no file read)
};

class AdapterRegistry {
 public:
  // Reads the adapter in a folder confined to the adapter root.
  using Loader = std::function<absl::StatusOr<std::unique_ptr<AdapterWeights>>(const ConfinedDir&)>;

  AdapterRegistry(AdapterRegistryOptions options, Loader loader);
  // Loading in two halves, which the host tier needs: read the files (host), build the adapter.
  struct TieredLoader {
    std::function<absl::StatusOr<std::unique_ptr<AdapterFiles>>(const ConfinedDir&)> read;
    // diagnose false: a rebuild, whose expert diagnostics the registry kept (not computed again).
    std::function<absl::StatusOr<std::unique_ptr<AdapterWeights>>(const AdapterFiles&, bool)> build;
  };
  AdapterRegistry(AdapterRegistryOptions options, TieredLoader loader);

  // Loads `path` (relative to the root) as `name`. An existing name is ALREADY_EXISTS unless
  // `replace`, which swaps atomically: requests admitted before keep the old version, requests
  // admitted after get the new one. A load that cannot fit the memory budget (after evicting idle
  // adapters) is RESOURCE_EXHAUSTED. Nothing is published unless the whole adapter loaded.
  absl::StatusOr<AdapterInfo> Load(const std::string& name, const std::string& path, bool replace);

  // Forgets `name`. While requests hold it: FAILED_PRECONDITION, unless `drain`, which stops new
  // requests from getting it and frees it when the last holder finishes.
  absl::Status Unload(const std::string& name, bool drain);

  // For a new request: the current version, reloaded from disk if it was evicted. NOT_FOUND for a
  // name never loaded (or unloaded).
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> Acquire(const std::string& name);

  absl::Status Pin(const std::string& name, bool pinned);
  std::vector<AdapterInfo> List() const;
  AdapterRegistryCounters counters() const;
  size_t resident_bytes() const;

  // `path` below the root, resolved; INVALID_ARGUMENT or PERMISSION_DENIED when it escapes.
  absl::StatusOr<ConfinedDir> Resolve(const std::string& path) const;

 private:
  struct Entry {
    std::string path;
    std::shared_ptr<const AdapterWeights> current;  // null while evicted
    uint64_t version = 0;
    bool pinned = false;
    uint64_t last_used = 0;
    int64_t loads = 0;
    int64_t evictions = 0;
    std::string family, format;
    size_t bytes = 0;
    std::shared_ptr<std::mutex> reload;        // serialises reloads of one name
    std::shared_ptr<const AdapterFiles> host;  // the host tier's copy of its files, or null
    std::shared_ptr<const AdapterDiagnostics> diagnostics;
  };

  // Reads (or, given `files`, rebuilds from them) the adapter; `read_files` receives the files
  // when a TieredLoader read them. With `diagnostics` (a reload's, kept from its first load) a
  // TieredLoader does not compute them again.
  absl::StatusOr<std::unique_ptr<AdapterWeights>> Read(
      const std::string& name, const std::string& path,
      std::shared_ptr<const AdapterFiles> files = nullptr,
      std::shared_ptr<const AdapterFiles>* read_files = nullptr,
      std::shared_ptr<const AdapterDiagnostics> diagnostics = nullptr);
  // Keeps `files` as e's host copy if the host tier has room (dropping others' copies, least
  // recently used first). Caller holds mu_.
  void KeepHostCopy(const std::string& name, Entry& e, std::shared_ptr<const AdapterFiles> files);
  // Evicts idle, unpinned adapters, least recently used first, until `need` more bytes fit.
  // Returns false when they cannot. Caller holds mu_.
  bool MakeRoom(size_t need, const std::string& keep);
  size_t ResidentBytesLocked() const;
  AdapterInfo InfoLocked(const std::string& name, const Entry& e) const;

  AdapterRegistryOptions options_;
  Loader loader_;
  TieredLoader tiered_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  // Versions replaced or unloaded while requests still held them: their memory counts until then.
  std::vector<std::weak_ptr<const AdapterWeights>> retired_;
  uint64_t clock_ = 0;
  uint64_t next_version_ = 1;
  AdapterRegistryCounters counters_;
};

}  // namespace switchyard
