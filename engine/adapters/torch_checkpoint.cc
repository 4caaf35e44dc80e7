#include "engine/adapters/torch_checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace {

constexpr size_t kMaxMemo = 1 << 20;
constexpr int kMaxRank = 8;

absl::Status Refuse(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("adapter_model.bin: ", what));
}

enum class Global {
  kOrderedDict,
  kRebuildTensor,
  kRebuildParameter,
  kFloatStorage,
  kHalfStorage,
  kBFloat16Storage,
};

struct StorageRef {
  DType dtype;
  std::string key;
  int64_t numel;
};

struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  int64_t offset;
  std::vector<int64_t> sizes, strides;
};

// Values live in the unpickler's arena and point at each other with plain pointers: a crafted
// pickle may nest a million tuples deep or make a list that holds itself, and neither may turn
// into a recursive destructor (stack overflow) or a reference cycle (leak).
struct Value;
using ValuePtr = Value*;
struct Mark {};
struct None {};
using List = std::vector<ValuePtr>;
using Dict = std::vector<std::pair<ValuePtr, ValuePtr>>;

struct Value {
  std::variant<None, Mark, bool, int64_t, double, std::string, List /*tuple*/,
               std::shared_ptr<List>, std::shared_ptr<Dict>, Global, std::shared_ptr<StorageRef>,
               TensorRef>
      v;
};

absl::string_view TypeName(const Value& v) {
  static const char* kNames[] = {"None",  "mark", "bool", "int",    "float",   "str",
                                 "tuple", "list", "dict", "global", "storage", "tensor"};
  return kNames[v.v.index()];
}

class Unpickler {
 public:
  explicit Unpickler(absl::string_view data) : data_(data) {}

  // Values are created through Make; they live as long as the unpickler.
  template <typename T>
  ValuePtr Make(T t) {
    arena_.emplace_back();
    arena_.back().v = std::move(t);
    return &arena_.back();
  }

  absl::StatusOr<ValuePtr> Run() {
    while (true) {
      SY_ASSIGN_OR_RETURN(uint8_t op, Byte());
      switch (op) {
        case 0x80:  // PROTO
          SY_RETURN_IF_ERROR(Byte().status());
          break;
        case 0x95:  // FRAME
          SY_RETURN_IF_ERROR(Bytes(8).status());
          break;
        case '}':
          Push(Make(std::make_shared<Dict>()));
          break;
        case ']':
          Push(Make(std::make_shared<List>()));
          break;
        case ')':
          Push(Make(List{}));
          break;
        case '(':
          Push(Make(Mark{}));
          break;
        case 'N':
          Push(Make(None{}));
          break;
        case 0x88:
          Push(Make(true));
          break;
        case 0x89:
          Push(Make(false));
          break;
        case 'K': {
          SY_ASSIGN_OR_RETURN(uint8_t b, Byte());
          Push(Make(static_cast<int64_t>(b)));
          break;
        }
        case 'M': {
          SY_ASSIGN_OR_RETURN(absl::string_view b, Bytes(2));
          Push(Make(static_cast<int64_t>(static_cast<uint8_t>(b[0]) |
                                         (static_cast<uint8_t>(b[1]) << 8))));
          break;
        }
        case 'J': {
          SY_ASSIGN_OR_RETURN(absl::string_view b, Bytes(4));
          int32_t v;
          std::memcpy(&v, b.data(), 4);
          Push(Make(static_cast<int64_t>(v)));
          break;
        }
        case 0x8a: {  // LONG1
          SY_ASSIGN_OR_RETURN(uint8_t n, Byte());
          if (n > 8) return Refuse("integer wider than 64 bits");
          SY_ASSIGN_OR_RETURN(absl::string_view b, Bytes(n));
          uint64_t u = 0;
          for (int i = n - 1; i >= 0; --i) u = (u << 8) | static_cast<uint8_t>(b[i]);
          if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80))
            u |= ~uint64_t{0} << (8 * n);
          Push(Make(static_cast<int64_t>(u)));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          SY_ASSIGN_OR_RETURN(absl::string_view b, Bytes(8));
          uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = (u << 8) | static_cast<uint8_t>(b[i]);
          double d;
          std::memcpy(&d, &u, 8);
          Push(Make(d));
          break;
        }
        case 'X':
        case 0x8c:
        case 0x8d:
        case 'B':
        case 'C': {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINBYTES, SHORT_BINBYTES
          uint64_t n = 0;
          const int width = (op == 0x8c || op == 'C') ? 1 : (op == 0x8d ? 8 : 4);
          SY_ASSIGN_OR_RETURN(absl::string_view len, Bytes(width));
          for (int i = width - 1; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(len[i]);
          if (n > data_.size()) return Refuse("string runs past the end of the pickle");
          SY_ASSIGN_OR_RETURN(absl::string_view s, Bytes(static_cast<size_t>(n)));
          Push(Make(std::string(s)));
          break;
        }
        case 'q':
        case 'r': {  // BINPUT, LONG_BINPUT
          uint32_t idx;
          SY_RETURN_IF_ERROR(ReadIndex(op == 'q', &idx));
          SY_ASSIGN_OR_RETURN(ValuePtr top, Top());
          SY_RETURN_IF_ERROR(Put(idx, top));
          break;
        }
        case 0x94: {  // MEMOIZE
          SY_ASSIGN_OR_RETURN(ValuePtr top, Top());
          SY_RETURN_IF_ERROR(Put(static_cast<uint32_t>(memo_.size()), top));
          break;
        }
        case 'h':
        case 'j': {  // BINGET, LONG_BINGET
          uint32_t idx;
          SY_RETURN_IF_ERROR(ReadIndex(op == 'h', &idx));
          auto it = memo_.find(idx);
          if (it == memo_.end()) return Refuse(absl::StrCat("memo entry ", idx, " is unset"));
          Push(it->second);
          break;
        }
        case 'c': {  // GLOBAL "module\nname\n"
          SY_ASSIGN_OR_RETURN(std::string module, Line());
          SY_ASSIGN_OR_RETURN(std::string name, Line());
          SY_ASSIGN_OR_RETURN(Global g, Resolve(module, name));
          Push(Make(g));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          SY_ASSIGN_OR_RETURN(std::string name, PopString());
          SY_ASSIGN_OR_RETURN(std::string module, PopString());
          SY_ASSIGN_OR_RETURN(Global g, Resolve(module, name));
          Push(Make(g));
          break;
        }
        case 't': {
          SY_ASSIGN_OR_RETURN(List items, PopToMark());
          Push(Make(std::move(items)));
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {
          const int n = op - 0x84;
          List items(static_cast<size_t>(n));
          for (int i = n - 1; i >= 0; --i) {
            SY_ASSIGN_OR_RETURN(items[i], Pop());
          }
          Push(Make(std::move(items)));
          break;
        }
        case 'a': {
          SY_ASSIGN_OR_RETURN(ValuePtr item, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr list, Top());
          auto* l = std::get_if<std::shared_ptr<List>>(&list->v);
          if (l == nullptr) return Refuse("APPEND to a non-list");
          (*l)->push_back(item);
          break;
        }
        case 'e': {
          SY_ASSIGN_OR_RETURN(List items, PopToMark());
          SY_ASSIGN_OR_RETURN(ValuePtr list, Top());
          auto* l = std::get_if<std::shared_ptr<List>>(&list->v);
          if (l == nullptr) return Refuse("APPENDS to a non-list");
          for (auto& i : items) (*l)->push_back(i);
          break;
        }
        case 's': {
          SY_ASSIGN_OR_RETURN(ValuePtr value, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr key, Pop());
          SY_RETURN_IF_ERROR(SetItems({key, value}));
          break;
        }
        case 'u': {
          SY_ASSIGN_OR_RETURN(List items, PopToMark());
          if (items.size() % 2 != 0) return Refuse("SETITEMS with an odd item count");
          SY_RETURN_IF_ERROR(SetItems(items));
          break;
        }
        case 'Q': {  // BINPERSID
          SY_ASSIGN_OR_RETURN(ValuePtr pid, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr storage, PersistentLoad(*pid));
          Push(storage);
          break;
        }
        case 'R': {  // REDUCE
          SY_ASSIGN_OR_RETURN(ValuePtr args, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr callable, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr result, Reduce(*callable, *args));
          Push(result);
          break;
        }
        case 'b': {  // BUILD: only an OrderedDict's attribute dict (state_dict's _metadata)
          SY_ASSIGN_OR_RETURN(ValuePtr state, Pop());
          SY_ASSIGN_OR_RETURN(ValuePtr obj, Top());
          if (!std::holds_alternative<std::shared_ptr<Dict>>(obj->v) ||
              !(std::holds_alternative<std::shared_ptr<Dict>>(state->v) ||
                std::holds_alternative<None>(state->v))) {
            return Refuse("BUILD on something other than a dict");
          }
          break;
        }
        case '.': {
          SY_ASSIGN_OR_RETURN(ValuePtr result, Pop());
          return result;
        }
        default:
          return Refuse(
              absl::StrCat("unsupported pickle opcode 0x", absl::Hex(op), " at byte ", pos_ - 1));
      }
    }
  }

 private:
  absl::StatusOr<uint8_t> Byte() {
    if (pos_ >= data_.size()) return Refuse("pickle ends without STOP");
    return static_cast<uint8_t>(data_[pos_++]);
  }
  absl::StatusOr<absl::string_view> Bytes(size_t n) {
    if (n > data_.size() - pos_) return Refuse("pickle ends in the middle of an opcode");
    absl::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  absl::StatusOr<std::string> Line() {
    const size_t nl = data_.find('\n', pos_);
    if (nl == absl::string_view::npos || nl - pos_ > 256) return Refuse("malformed GLOBAL");
    std::string s(data_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return s;
  }
  absl::Status ReadIndex(bool one_byte, uint32_t* idx) {
    if (one_byte) {
      SY_ASSIGN_OR_RETURN(uint8_t b, Byte());
      *idx = b;
      return absl::OkStatus();
    }
    SY_ASSIGN_OR_RETURN(absl::string_view b, Bytes(4));
    std::memcpy(idx, b.data(), 4);
    return absl::OkStatus();
  }
  absl::Status Put(uint32_t idx, ValuePtr v) {
    if (memo_.size() >= kMaxMemo && !memo_.contains(idx)) return Refuse("memo too large");
    memo_[idx] = std::move(v);
    return absl::OkStatus();
  }
  void Push(ValuePtr v) { stack_.push_back(std::move(v)); }
  absl::StatusOr<ValuePtr> Pop() {
    if (stack_.empty() || std::holds_alternative<Mark>(stack_.back()->v)) {
      return Refuse("pickle stack underflow");
    }
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<ValuePtr> Top() {
    if (stack_.empty()) return Refuse("pickle stack underflow");
    return stack_.back();
  }
  absl::StatusOr<std::string> PopString() {
    SY_ASSIGN_OR_RETURN(ValuePtr v, Pop());
    auto* s = std::get_if<std::string>(&v->v);
    if (s == nullptr) return Refuse("STACK_GLOBAL needs strings");
    return *s;
  }
  absl::StatusOr<List> PopToMark() {
    size_t i = stack_.size();
    while (i > 0 && !std::holds_alternative<Mark>(stack_[i - 1]->v)) --i;
    if (i == 0) return Refuse("no MARK on the pickle stack");
    List items(stack_.begin() + static_cast<ptrdiff_t>(i), stack_.end());
    stack_.resize(i - 1);
    return items;
  }

  absl::StatusOr<Global> Resolve(const std::string& module, const std::string& name) {
    if (module == "collections" && name == "OrderedDict") return Global::kOrderedDict;
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") return Global::kRebuildTensor;
    if (module == "torch._utils" && name == "_rebuild_parameter") return Global::kRebuildParameter;
    if (module == "torch" && name == "FloatStorage") return Global::kFloatStorage;
    if (module == "torch" && name == "HalfStorage") return Global::kHalfStorage;
    if (module == "torch" && name == "BFloat16Storage") return Global::kBFloat16Storage;
    if (module == "torch" && absl::EndsWith(name, "Storage")) {
      return Refuse(absl::StrCat("tensor storage torch.", name,
                                 " is not a floating-point type an adapter can hold"));
    }
    return Refuse(absl::StrCat("pickle references forbidden global ", module, ".", name,
                               " (only tensors and dicts may be loaded)"));
  }

  absl::Status SetItems(const List& kv) {
    SY_ASSIGN_OR_RETURN(ValuePtr dict, Top());
    auto* d = std::get_if<std::shared_ptr<Dict>>(&dict->v);
    if (d == nullptr) return Refuse("SETITEM on a non-dict");
    for (size_t i = 0; i + 1 < kv.size(); i += 2) (*d)->emplace_back(kv[i], kv[i + 1]);
    return absl::OkStatus();
  }

  absl::StatusOr<ValuePtr> PersistentLoad(const Value& pid) {
    const auto* t = std::get_if<List>(&pid.v);
    if (t == nullptr || t->size() != 5) return Refuse("persistent id is not a storage tuple");
    const auto* tag = std::get_if<std::string>(&(*t)[0]->v);
    const auto* type = std::get_if<Global>(&(*t)[1]->v);
    const auto* key = std::get_if<std::string>(&(*t)[2]->v);
    const auto* numel = std::get_if<int64_t>(&(*t)[4]->v);
    if (tag == nullptr || *tag != "storage" || type == nullptr || key == nullptr ||
        numel == nullptr || *numel < 0) {
      return Refuse("malformed storage reference");
    }
    auto ref = std::make_shared<StorageRef>();
    switch (*type) {
      case Global::kFloatStorage:
        ref->dtype = DType::kF32;
        break;
      case Global::kHalfStorage:
        ref->dtype = DType::kF16;
        break;
      case Global::kBFloat16Storage:
        ref->dtype = DType::kBF16;
        break;
      default:
        return Refuse("storage reference of a non-storage type");
    }
    if (*numel > (int64_t{1} << 60) / static_cast<int64_t>(SizeOf(ref->dtype))) {
      return Refuse(absl::StrCat("storage ", *key, " claims ", *numel, " elements"));
    }
    ref->key = *key;
    ref->numel = *numel;
    return Make(ref);
  }

  absl::StatusOr<ValuePtr> Reduce(const Value& callable, const Value& args_value) {
    const auto* g = std::get_if<Global>(&callable.v);
    const auto* args = std::get_if<List>(&args_value.v);
    if (g == nullptr || args == nullptr) return Refuse("REDUCE of a non-callable");
    switch (*g) {
      case Global::kOrderedDict:
        if (!args->empty()) return Refuse("OrderedDict built from arguments");
        return Make(std::make_shared<Dict>());
      case Global::kRebuildParameter: {
        if (args->size() < 1 || !std::holds_alternative<TensorRef>((*args)[0]->v)) {
          return Refuse("malformed _rebuild_parameter");
        }
        return (*args)[0];
      }
      case Global::kRebuildTensor: {
        if (args->size() < 4) return Refuse("malformed _rebuild_tensor_v2");
        const auto* storage = std::get_if<std::shared_ptr<StorageRef>>(&(*args)[0]->v);
        const auto* offset = std::get_if<int64_t>(&(*args)[1]->v);
        const auto* size = std::get_if<List>(&(*args)[2]->v);
        const auto* stride = std::get_if<List>(&(*args)[3]->v);
        if (storage == nullptr || offset == nullptr || size == nullptr || stride == nullptr ||
            size->size() != stride->size() || size->size() > kMaxRank || *offset < 0) {
          return Refuse("malformed _rebuild_tensor_v2 arguments");
        }
        TensorRef t;
        t.storage = *storage;
        t.offset = *offset;
        for (size_t i = 0; i < size->size(); ++i) {
          const auto* s = std::get_if<int64_t>(&(*size)[i]->v);
          const auto* st = std::get_if<int64_t>(&(*stride)[i]->v);
          if (s == nullptr || st == nullptr || *s < 0 || *st < 0) {
            return Refuse("tensor size and stride must be non-negative integers");
          }
          t.sizes.push_back(*s);
          t.strides.push_back(*st);
        }
        return Make(std::move(t));
      }
      default:
        return Refuse("REDUCE of a storage type");
    }
  }

  absl::string_view data_;
  size_t pos_ = 0;
  std::deque<Value> arena_;
  std::vector<ValuePtr> stack_;
  std::map<uint32_t, ValuePtr> memo_;
};

// What one load may allocate beyond the storages it reads. A view that needs a copy (strided or
// overlapping) is at most as large as its storage in any checkpoint torch.save writes; this slack
// lets small ones through while a crafted view over a tiny storage cannot ask for gigabytes.
constexpr int64_t kCopySlackBytes = int64_t{16} << 20;
// A compressed entry may claim at most this expansion of its compressed bytes (plus the slack):
// tensor data barely compresses and torch.save stores entries uncompressed anyway, while deflate
// can reach 1032:1 — a zip bomb must not get that far.
constexpr uint64_t kMaxExpansion = 32;
constexpr uint64_t kExpansionSlackBytes = uint64_t{16} << 20;

// Storages read once per load, shared by every tensor that views them.
struct StorageBytes {
  std::shared_ptr<const std::string> bytes;
};

// Tracks the bytes one load has allocated (storages and copies) against its budget.
class LoadBudget {
 public:
  explicit LoadBudget(int64_t archive_bytes) : archive_bytes_(archive_bytes) {}
  int64_t archive_bytes() const { return archive_bytes_; }
  void AddStorage(int64_t bytes) { storage_bytes_ += bytes; }
  absl::Status AddCopy(const std::string& name, int64_t bytes) {
    copied_bytes_ += bytes;
    if (copied_bytes_ > storage_bytes_ + kCopySlackBytes) {
      return Refuse(absl::StrCat("tensor \"", name, "\": strided views would copy ", copied_bytes_,
                                 " bytes out of ", storage_bytes_,
                                 " bytes of storage (a view may not be larger than its storage)"));
    }
    return absl::OkStatus();
  }

 private:
  const int64_t archive_bytes_;
  int64_t storage_bytes_ = 0;
  int64_t copied_bytes_ = 0;
};

// Checks a view's sizes, strides and offset against its storage with overflow-checked arithmetic:
// the element count, and the last element's index, which must lie inside the storage.
absl::StatusOr<int64_t> CheckView(const std::string& name, const TensorRef& t) {
  const auto refuse = [&](absl::string_view what) {
    return Refuse(absl::StrCat("tensor \"", name, "\" ", what));
  };
  int64_t numel = 1;
  for (int64_t size : t.sizes) {
    if (__builtin_mul_overflow(numel, size, &numel) || numel > (int64_t{1} << 50)) {
      return refuse("has more elements than any adapter could");
    }
  }
  if (numel == 0) return 0;
  int64_t last = t.offset;
  for (size_t i = 0; i < t.sizes.size(); ++i) {
    if (t.strides[i] == 0 && t.sizes[i] > 1) {
      return refuse("repeats one element along a dimension (zero stride)");
    }
    int64_t extent;
    if (__builtin_mul_overflow(t.sizes[i] - 1, t.strides[i], &extent) ||
        __builtin_add_overflow(last, extent, &last)) {
      return refuse("has sizes and strides that overflow");
    }
  }
  if (last >= t.storage->numel) {
    return refuse(absl::StrCat("reaches element ", last, " of storage ", t.storage->key,
                               ", which holds ", t.storage->numel));
  }
  return numel;
}

// The view `t` of `storage`: shared with the storage when contiguous, else copied.
absl::StatusOr<Tensor> Materialize(const std::string& name, const TensorRef& t,
                                   const StorageBytes& storage, LoadBudget& budget) {
  const int64_t elem = static_cast<int64_t>(SizeOf(t.storage->dtype));
  if (static_cast<int64_t>(storage.bytes->size()) != t.storage->numel * elem) {
    return Refuse(absl::StrCat("tensor \"", name, "\": storage ", t.storage->key, " holds ",
                               storage.bytes->size(), " bytes, not ", t.storage->numel,
                               " elements"));
  }
  SY_ASSIGN_OR_RETURN(const int64_t numel, CheckView(name, t));
  Shape shape(t.sizes.begin(), t.sizes.end());
  const char* base = storage.bytes->data();
  const int rank = static_cast<int>(t.sizes.size());
  bool contiguous = true;
  int64_t expect = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (t.sizes[d] != 1 && t.strides[d] != expect) contiguous = false;
    expect *= t.sizes[d];
  }
  if (numel == 0 || contiguous) {
    // Aliases the storage: a storage viewed by many tensors (or one tensor memoised under many
    // names) costs its bytes once.
    const char* data = numel == 0 ? base : base + t.offset * elem;
    return Tensor::Wrap(const_cast<char*>(data), t.storage->dtype, std::move(shape), storage.bytes);
  }
  SY_RETURN_IF_ERROR(budget.AddCopy(name, numel * elem));
  SY_ASSIGN_OR_RETURN(Tensor out, Tensor::TryEmpty(t.storage->dtype, std::move(shape)));
  std::vector<int64_t> idx(static_cast<size_t>(rank), 0);
  char* dst = out.data<char>();
  for (int64_t n = 0; n < numel; ++n) {
    int64_t src = t.offset;
    for (int d = 0; d < rank; ++d) src += idx[d] * t.strides[d];
    std::memcpy(dst + n * elem, base + src * elem, static_cast<size_t>(elem));
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < t.sizes[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};

// Reads one entry. Its declared size is checked before anything is allocated: it must fit the
// archive (stored entries) or deflate's largest possible expansion of its compressed bytes.
absl::StatusOr<std::string> ReadEntry(zip_t* z, zip_int64_t index, const LoadBudget& budget) {
  zip_stat_t st;
  if (zip_stat_index(z, static_cast<zip_uint64_t>(index), 0, &st) != 0 ||
      !(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_SIZE) ||
      !(st.valid & ZIP_STAT_COMP_METHOD)) {
    return Refuse("cannot read a zip entry's header");
  }
  const std::string entry = st.valid & ZIP_STAT_NAME ? st.name : "?";
  const uint64_t archive = static_cast<uint64_t>(budget.archive_bytes());
  if (st.comp_size > archive) {
    return Refuse(absl::StrCat("zip entry ", entry, " claims ", st.comp_size, " stored bytes in a ",
                               archive, "-byte archive"));
  }
  const uint64_t cap = st.comp_method == ZIP_CM_STORE
                           ? st.comp_size
                           : st.comp_size * kMaxExpansion + kExpansionSlackBytes;
  if (st.size > cap) {
    return Refuse(absl::StrCat("zip entry ", entry, " claims ", st.size, " bytes from ",
                               st.comp_size, " stored in a ", archive, "-byte archive"));
  }
  zip_file_t* f = zip_fopen_index(z, static_cast<zip_uint64_t>(index), 0);
  if (f == nullptr) return Refuse(absl::StrCat("cannot open zip entry ", entry));
  std::string out;
  try {
    out.resize(static_cast<size_t>(st.size));
  } catch (const std::bad_alloc&) {
    zip_fclose(f);
    return absl::ResourceExhaustedError(
        absl::StrCat("adapter_model.bin: cannot allocate ", st.size, " bytes for ", entry));
  }
  const zip_int64_t n = zip_fread(f, out.data(), st.size);
  zip_fclose(f);
  if (n < 0 || static_cast<uint64_t>(n) != st.size) {
    return Refuse(absl::StrCat("truncated zip entry ", entry));
  }
  return out;
}

using StorageReader = std::function<absl::StatusOr<std::string>(const std::string& key)>;

// The dict of tensors a torch.save pickle describes, each storage read once through `read`.
absl::StatusOr<std::vector<NamedTensor>> TensorsOfPickle(absl::string_view pickle,
                                                         const StorageReader& read,
                                                         LoadBudget& budget) {
  Unpickler unpickler(pickle);
  SY_ASSIGN_OR_RETURN(ValuePtr root, unpickler.Run());
  const auto* dict = std::get_if<std::shared_ptr<Dict>>(&root->v);
  if (dict == nullptr) {
    return Refuse(
        absl::StrCat("the checkpoint holds a ", TypeName(*root), ", not a dict of tensors"));
  }
  std::map<std::string, StorageBytes> storages;
  std::vector<NamedTensor> out;
  for (const auto& [k, v] : **dict) {
    const auto* key = std::get_if<std::string>(&k->v);
    const auto* t = std::get_if<TensorRef>(&v->v);
    if (key == nullptr) return Refuse("a dict key is not a string");
    if (t == nullptr) {
      return Refuse(absl::StrCat("\"", *key, "\" is a ", TypeName(*v), ", not a tensor"));
    }
    auto it = storages.find(t->storage->key);
    if (it == storages.end()) {
      absl::StatusOr<std::string> bytes = read(t->storage->key);
      if (!bytes.ok()) {
        return absl::Status(bytes.status().code(),
                            absl::StrCat("tensor \"", *key, "\": ", bytes.status().message()));
      }
      budget.AddStorage(static_cast<int64_t>(bytes->size()));
      it = storages
               .emplace(t->storage->key,
                        StorageBytes{std::make_shared<const std::string>(std::move(*bytes))})
               .first;
    }
    SY_ASSIGN_OR_RETURN(Tensor tensor, Materialize(*key, *t, it->second, budget));
    out.push_back({*key, std::move(tensor)});
  }
  return out;
}

absl::StatusOr<std::vector<NamedTensor>> ReadArchive(zip_t* archive, int64_t archive_bytes) {
  std::unique_ptr<zip_t, ZipCloser> z(archive);
  LoadBudget budget(archive_bytes);
  const zip_int64_t n = zip_get_num_entries(z.get(), 0);
  std::string prefix;
  zip_int64_t pickle_index = -1;
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), 0);
    if (name != nullptr && absl::EndsWith(name, "data.pkl")) {
      pickle_index = i;
      prefix = std::string(name, std::strlen(name) - std::strlen("data.pkl"));
      break;
    }
  }
  if (pickle_index < 0) return Refuse("not a torch.save archive (no data.pkl)");
  if (const zip_int64_t bo = zip_name_locate(z.get(), (prefix + "byteorder").c_str(), 0); bo >= 0) {
    SY_ASSIGN_OR_RETURN(std::string order, ReadEntry(z.get(), bo, budget));
    if (order != "little") return Refuse("big-endian checkpoints are not supported");
  }
  SY_ASSIGN_OR_RETURN(std::string pickle, ReadEntry(z.get(), pickle_index, budget));
  return TensorsOfPickle(
      pickle,
      [&](const std::string& key) -> absl::StatusOr<std::string> {
        const zip_int64_t idx = zip_name_locate(z.get(), (prefix + "data/" + key).c_str(), 0);
        if (idx < 0) return Refuse(absl::StrCat("storage ", key, " is missing from the archive"));
        return ReadEntry(z.get(), idx, budget);
      },
      budget);
}

absl::StatusOr<std::vector<NamedTensor>> OpenError(const std::string& what, int error) {
  zip_error_t e;
  zip_error_init_with_code(&e, error);
  const std::string message = zip_error_strerror(&e);
  zip_error_fini(&e);
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": not a torch.save zip archive (", message,
                   "); checkpoints from PyTorch < 1.6 must be re-saved"));
}

}  // namespace

absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpoint(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return ReadTorchCheckpointFd(fd, path);
}

absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpointFd(int fd, const std::string& what) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a regular file"));
  }
  int error = 0;
  zip_t* z = zip_fdopen(fd, ZIP_RDONLY, &error);  // owns fd from here on, on success
  if (z == nullptr) {
    ::close(fd);
    return OpenError(what, error);
  }
  return ReadArchive(z, static_cast<int64_t>(st.st_size));
}

absl::StatusOr<std::vector<NamedTensor>> ReadTorchPickle(
    absl::string_view pickle, const std::map<std::string, std::string>& storages) {
  LoadBudget budget(static_cast<int64_t>(pickle.size()));
  return TensorsOfPickle(
      pickle,
      [&](const std::string& key) -> absl::StatusOr<std::string> {
        auto it = storages.find(key);
        if (it == storages.end()) return Refuse(absl::StrCat("storage ", key, " is missing"));
        return it->second;
      },
      budget);
}

absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpointBytes(const std::string& bytes) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (src == nullptr) {
    zip_error_fini(&error);
    return Refuse("cannot read the archive");
  }
  zip_t* z = zip_open_from_source(src, ZIP_RDONLY, &error);
  zip_error_fini(&error);
  if (z == nullptr) {
    zip_source_free(src);
    return Refuse("not a zip archive");
  }
  return ReadArchive(z, static_cast<int64_t>(bytes.size()));
}

}  // namespace switchyard
