#include "engine/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace {

// Element sizes of every dtype the safetensors format defines, so that files holding tensors we
// do not compute with still validate.
std::optional<size_t> ElementSize(absl::string_view dtype) {
  static const std::pair<absl::string_view, size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return std::nullopt;
}

absl::Status Malformed(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": malformed safetensors file: ", what));
}

}  // namespace

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  SY_ASSIGN_OR_RETURN(FileBytes bytes, FileBytes::Map(path));
  return Adopt(std::move(bytes), path);
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string bytes, std::string name) {
  return Adopt(FileBytes::Own(std::move(bytes)), std::move(name));
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Adopt(FileBytes bytes,
                                                                              std::string name) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->bytes_ = std::move(bytes);
  file->base_ = file->bytes_.data();
  file->size_ = file->bytes_.size();
  SY_RETURN_IF_ERROR(file->Parse());
  file->self_ = file;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < 8) return Malformed(path_, "shorter than its 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);  // little-endian, as is every machine we run on
  if (header_len > kMaxHeaderBytes) {
    return Malformed(path_, absl::StrCat("header of ", header_len, " bytes exceeds the ",
                                         kMaxHeaderBytes, "-byte cap"));
  }
  if (header_len > size_ - 8) {
    return Malformed(path_, absl::StrCat("header of ", header_len,
                                         " bytes runs past the end of the file (truncated?)"));
  }
  data_ = base_ + 8 + header_len;
  data_size_ = size_ - 8 - header_len;
  SY_ASSIGN_OR_RETURN(
      nlohmann::json header,
      json_util::Parse(absl::string_view(base_ + 8, static_cast<size_t>(header_len)), path_));
  if (!header.is_object()) return Malformed(path_, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Malformed(path_, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Malformed(path_, "__metadata__ values must be strings");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const auto bad = [&](absl::string_view what) {
      return Malformed(path_, absl::StrCat("tensor \"", name, "\": ", what));
    };
    if (!v.is_object()) return bad("entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("missing dtype");
    if (!v.contains("shape") || !v["shape"].is_array()) return bad("missing shape");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2) {
      return bad("data_offsets must be [begin, end]");
    }
    SafetensorsEntry e;
    e.name = name;
    e.dtype_name = v["dtype"].get<std::string>();
    const std::optional<size_t> elem = ElementSize(e.dtype_name);
    if (!elem) return bad(absl::StrCat("unknown dtype \"", e.dtype_name, "\""));
    if (auto d = ParseSafetensorsDType(e.dtype_name); d.ok()) e.dtype = *d;
    uint64_t numel = 1;
    for (const auto& dim : v["shape"]) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
        return bad("shape dimensions must be non-negative integers");
      }
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > (uint64_t{1} << 62) / d) return bad("shape is too large");
      numel *= d;
      e.shape.push_back(static_cast<int64_t>(d));
    }
    for (const auto& off : v["data_offsets"]) {
      if (!off.is_number_unsigned() && !(off.is_number_integer() && off.get<int64_t>() >= 0)) {
        return bad("data_offsets must be non-negative integers");
      }
    }
    const uint64_t begin = v["data_offsets"][0].get<uint64_t>();
    const uint64_t end = v["data_offsets"][1].get<uint64_t>();
    if (begin > end) return bad("data_offsets begin after they end");
    if (end > data_size_) {
      return bad(absl::StrCat("data ends at byte ", end, " but the data section holds ", data_size_,
                              " (truncated file?)"));
    }
    if (numel > (uint64_t{1} << 62) / *elem || numel * *elem != end - begin) {
      return bad(absl::StrCat("shape ", ShapeString(e.shape), " of ", e.dtype_name, " needs ",
                              numel * *elem, " bytes but data_offsets span ", end - begin));
    }
    e.begin = static_cast<size_t>(begin);
    e.end = static_cast<size_t>(end);
    entries_.push_back(std::move(e));
  }

  std::vector<size_t> order(entries_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return entries_[a].begin < entries_[b].begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    const SafetensorsEntry& prev = entries_[order[i - 1]];
    const SafetensorsEntry& cur = entries_[order[i]];
    if (cur.begin < prev.end) {
      return Malformed(path_,
                       absl::StrCat("tensors \"", prev.name, "\" and \"", cur.name, "\" overlap"));
    }
  }
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
  return absl::OkStatus();
}

const SafetensorsEntry* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::Get(absl::string_view name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  if (!e->dtype) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor \"", name, "\" has dtype ",
                                                   e->dtype_name,
                                                   "; supported: F32, F16, BF16, I32"));
  }
  return Tensor::Wrap(const_cast<char*>(data_) + e->begin, *e->dtype, e->shape, self_.lock());
}

TensorSet TensorSet::FromFile(std::shared_ptr<const SafetensorsFile> file) {
  TensorSet set;
  for (const SafetensorsEntry& e : file->entries()) set.file_of_[e.name] = 0;
  set.files_.push_back(std::move(file));
  return set;
}

absl::StatusOr<TensorSet> TensorSet::OpenFolder(const std::string& dir, absl::string_view stem) {
  namespace fs = std::filesystem;
  const std::string single = absl::StrCat(dir, "/", stem, ".safetensors");
  const std::string index = absl::StrCat(dir, "/", stem, ".safetensors.index.json");
  TensorSet set;
  if (fs::exists(index)) {
    SY_ASSIGN_OR_RETURN(std::string text, ReadFile(index));
    SY_ASSIGN_OR_RETURN(nlohmann::json j, json_util::Parse(text, index));
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index, ": missing \"weight_map\" object"));
    }
    absl::flat_hash_map<std::string, size_t> shard_index;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index, ": weight_map entry \"", it.key(), "\" is not a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == ".." || shard.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index, ": shard name \"", shard, "\" must be a plain file name"));
      }
      auto [pos, inserted] = shard_index.try_emplace(shard, set.files_.size());
      if (inserted) {
        SY_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(absl::StrCat(dir, "/", shard)));
        set.files_.push_back(std::move(file));
      }
      if (set.files_[pos->second]->Find(it.key()) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(index, ": tensor \"", it.key(), "\" is not in shard ", shard));
      }
      set.file_of_[it.key()] = pos->second;
    }
    return set;
  }
  if (!fs::exists(single)) {
    return absl::NotFoundError(
        absl::StrCat("no ", stem, ".safetensors or ", stem, ".safetensors.index.json in ", dir));
  }
  SY_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
  return FromFile(std::move(file));
}

bool TensorSet::Contains(absl::string_view name) const { return file_of_.contains(name); }

std::vector<std::string> TensorSet::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : file_of_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

const SafetensorsEntry* TensorSet::Find(absl::string_view name) const {
  auto it = file_of_.find(name);
  return it == file_of_.end() ? nullptr : files_[it->second]->Find(name);
}

absl::StatusOr<Tensor> TensorSet::Get(absl::string_view name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) {
    return absl::NotFoundError(absl::StrCat("missing tensor \"", name, "\""));
  }
  return files_[it->second]->Get(name);
}

absl::StatusOr<Tensor> TensorSet::Get(absl::string_view name, const Shape& expected) const {
  SY_ASSIGN_OR_RETURN(Tensor t, Get(name));
  if (t.shape() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has shape ",
                                                   ShapeString(t.shape()), ", expected ",
                                                   ShapeString(expected)));
  }
  return t;
}

}  // namespace switchyard
