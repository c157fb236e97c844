#include "engine/model/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace compressd {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = 1 << 16;

// Bounds-checked little-endian cursor over the mapped bytes.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", path_, ": ", what, " (at byte ", pos_, ")"));
  }
  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    if (left() < sizeof(T)) return Error(absl::StrCat("truncated reading ", what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status Skip(uint64_t n, absl::string_view what) {
    if (n > left()) return Error(absl::StrCat("truncated reading ", what));
    pos_ += static_cast<size_t>(n);
    return absl::OkStatus();
  }
  absl::Status ReadString(std::string* out, absl::string_view what) {
    uint64_t len = 0;
    RETURN_IF_ERROR(Read(&len, what));
    if (len > left()) {
      return Error(absl::StrCat(what, ": string length ", len, " exceeds the file"));
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return absl::OkStatus();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};


bool IsKnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }
bool IsIntType(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}
bool IsUnsignedType(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 ||
         t == GgufType::kUint64;
}

template <typename T>
T Load(const uint8_t* p) {
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

template <typename T>
void SetInt(T x, GgufValue* v) {
  v->i = static_cast<int64_t>(x);
  v->u = static_cast<uint64_t>(x);
  v->f = static_cast<double>(x);
}

// Decodes one numeric scalar at p into v (fields i/u/f/b).
void DecodeScalar(GgufType t, const uint8_t* p, GgufValue* v) {
  switch (t) {
    case GgufType::kUint8:
      SetInt(Load<uint8_t>(p), v);
      break;
    case GgufType::kInt8:
      SetInt(Load<int8_t>(p), v);
      break;
    case GgufType::kUint16:
      SetInt(Load<uint16_t>(p), v);
      break;
    case GgufType::kInt16:
      SetInt(Load<int16_t>(p), v);
      break;
    case GgufType::kUint32:
      SetInt(Load<uint32_t>(p), v);
      break;
    case GgufType::kInt32:
      SetInt(Load<int32_t>(p), v);
      break;
    case GgufType::kUint64:
      SetInt(Load<uint64_t>(p), v);
      break;
    case GgufType::kInt64:
      SetInt(Load<int64_t>(p), v);
      break;
    case GgufType::kFloat32:
      v->f = Load<float>(p);
      break;
    case GgufType::kFloat64:
      v->f = Load<double>(p);
      break;
    case GgufType::kBool:
      SetInt(Load<uint8_t>(p), v);
      v->b = v->u != 0;
      break;
    default:
      break;
  }
}

// a * b with overflow detection.
bool MulOverflow(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

size_t GgufScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

const char* GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

namespace {
struct TypeRow {
  GgmlType type;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
};
constexpr TypeRow kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},
    {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},
    {GgmlType::kQ4_1, "Q4_1", 32, 20},
    {GgmlType::kQ5_0, "Q5_0", 32, 22},
    {GgmlType::kQ5_1, "Q5_1", 32, 24},
    {GgmlType::kQ8_0, "Q8_0", 32, 34},
    {GgmlType::kQ8_1, "Q8_1", 32, 36},
    {GgmlType::kQ2_K, "Q2_K", 256, 84},
    {GgmlType::kQ3_K, "Q3_K", 256, 110},
    {GgmlType::kQ4_K, "Q4_K", 256, 144},
    {GgmlType::kQ5_K, "Q5_K", 256, 176},
    {GgmlType::kQ6_K, "Q6_K", 256, 210},
    {GgmlType::kQ8_K, "Q8_K", 256, 292},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66},
    {GgmlType::kIQ2_XS, "IQ2_XS", 256, 74},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", 256, 98},
    {GgmlType::kIQ1_S, "IQ1_S", 256, 50},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18},
    {GgmlType::kIQ3_S, "IQ3_S", 256, 110},
    {GgmlType::kIQ2_S, "IQ2_S", 256, 82},
    {GgmlType::kIQ4_XS, "IQ4_XS", 256, 136},
    {GgmlType::kI8, "I8", 1, 1},
    {GgmlType::kI16, "I16", 1, 2},
    {GgmlType::kI32, "I32", 1, 4},
    {GgmlType::kI64, "I64", 1, 8},
    {GgmlType::kF64, "F64", 1, 8},
    {GgmlType::kIQ1_M, "IQ1_M", 256, 56},
    {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kTQ1_0, "TQ1_0", 256, 54},
    {GgmlType::kTQ2_0, "TQ2_0", 256, 66},
    {GgmlType::kMXFP4, "MXFP4", 32, 17},
};
const TypeRow* FindTypeRow(GgmlType t) {
  for (const TypeRow& r : kGgmlTypes) {
    if (r.type == t) return &r;
  }
  return nullptr;
}
}  // namespace

const char* GgmlTypeName(GgmlType t) {
  const TypeRow* r = FindTypeRow(t);
  return r ? r->name : nullptr;
}

bool GgmlTypeTraits(GgmlType t, int64_t* block_elems, int64_t* block_bytes) {
  const TypeRow* r = FindTypeRow(t);
  if (!r) return false;
  *block_elems = r->block_elems;
  *block_bytes = r->block_bytes;
  return true;
}

absl::StatusOr<std::shared_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MmapFile> file, MmapFile::Open(path));
  return FromMmap(std::move(file));
}

absl::StatusOr<std::shared_ptr<GgufFile>> GgufFile::OpenFromBytes(std::string bytes,
                                                                  std::string name) {
  return FromMmap(MmapFile::FromBytes(std::move(bytes), std::move(name)));
}

absl::StatusOr<std::shared_ptr<GgufFile>> GgufFile::FromMmap(std::shared_ptr<MmapFile> file) {
  std::shared_ptr<GgufFile> g(new GgufFile());
  g->file_ = std::move(file);
  RETURN_IF_ERROR(g->Parse());
  return g;
}

absl::Status GgufFile::Parse() {
  const std::string& path = file_->path();
  Cursor c(file_->data(), file_->size(), path);
  uint32_t magic = 0;
  RETURN_IF_ERROR(c.Read(&magic, "magic"));
  if (magic != kGgufMagic) return c.Error("not a GGUF file (bad magic)");
  RETURN_IF_ERROR(c.Read(&version_, "version"));
  if (version_ != 2 && version_ != 3) {
    return c.Error(absl::StrCat("unsupported GGUF version ", version_,
                                " (v2 and v3 little-endian are supported)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  RETURN_IF_ERROR(c.Read(&n_tensors, "tensor count"));
  RETURN_IF_ERROR(c.Read(&n_kv, "metadata count"));
  // Smallest encodings: a kv is key length (8) + type (4) + a 1-byte value; a tensor info is
  // name length (8) + n_dims (4) + type (4) + offset (8). Checking first bounds every
  // reserve() below by the file size.
  if (n_kv > c.left() / 13)
    return c.Error(absl::StrCat("metadata count ", n_kv, " exceeds the file"));
  if (n_tensors > c.left() / 24) {
    return c.Error(absl::StrCat("tensor count ", n_tensors, " exceeds the file"));
  }

  keys_.reserve(n_kv);
  values_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    RETURN_IF_ERROR(c.ReadString(&key, absl::StrCat("metadata key #", k)));
    uint32_t type = 0;
    RETURN_IF_ERROR(c.Read(&type, absl::StrCat("type of ", key)));
    if (!IsKnownType(type)) {
      return c.Error(absl::StrCat("metadata ", key, ": unknown value type ", type));
    }
    GgufValue v;
    v.type = static_cast<GgufType>(type);
    if (v.type == GgufType::kString) {
      RETURN_IF_ERROR(c.ReadString(&v.str, key));
    } else if (v.type == GgufType::kArray) {
      uint32_t elem = 0;
      RETURN_IF_ERROR(c.Read(&elem, absl::StrCat("element type of ", key)));
      if (!IsKnownType(elem)) {
        return c.Error(absl::StrCat("metadata ", key, ": unknown array element type ", elem));
      }
      v.elem_type = static_cast<GgufType>(elem);
      if (v.elem_type == GgufType::kArray) {
        return c.Error(absl::StrCat("metadata ", key, ": nested arrays are not supported"));
      }
      RETURN_IF_ERROR(c.Read(&v.count, absl::StrCat("element count of ", key)));
      if (v.elem_type == GgufType::kString) {
        if (v.count > c.left() / 8) {
          return c.Error(
              absl::StrCat("metadata ", key, ": array count ", v.count, " exceeds the file"));
        }
        v.strings.resize(static_cast<size_t>(v.count));
        for (uint64_t e = 0; e < v.count; ++e) {
          RETURN_IF_ERROR(c.ReadString(&v.strings[e], key));
        }
      } else {
        const size_t es = GgufScalarSize(v.elem_type);
        if (v.count > c.left() / es) {
          return c.Error(
              absl::StrCat("metadata ", key, ": array count ", v.count, " exceeds the file"));
        }
        v.raw = c.here();
        RETURN_IF_ERROR(c.Skip(v.count * es, key));
      }
    } else {
      const size_t es = GgufScalarSize(v.type);
      if (c.left() < es) return c.Error(absl::StrCat("truncated value of ", key));
      DecodeScalar(v.type, c.here(), &v);
      RETURN_IF_ERROR(c.Skip(es, key));
    }
    if (index_.contains(key)) return c.Error(absl::StrCat("duplicate metadata key ", key));
    index_.emplace(key, keys_.size());
    keys_.push_back(std::move(key));
    values_.push_back(std::move(v));
  }

  if (const GgufValue* a = Find("general.alignment")) {
    if (!IsIntType(a->type) || a->i <= 0 || static_cast<uint64_t>(a->i) > kMaxAlignment ||
        (a->u & (a->u - 1)) != 0) {
      return c.Error("general.alignment must be a power of two integer in [1, 65536]");
    }
    alignment_ = a->u;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensorInfo info;
    RETURN_IF_ERROR(c.ReadString(&info.name, absl::StrCat("tensor name #", t)));
    uint32_t n_dims = 0;
    RETURN_IF_ERROR(c.Read(&n_dims, absl::StrCat("dims of ", info.name)));
    if (n_dims > kMaxDims) {
      return c.Error(absl::StrCat("tensor ", info.name, ": ", n_dims, " dims (max 4)"));
    }
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      RETURN_IF_ERROR(c.Read(&dim, absl::StrCat("dims of ", info.name)));
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          MulOverflow(numel, dim, &numel)) {
        return c.Error(absl::StrCat("tensor ", info.name, ": dims overflow"));
      }
      info.dims.push_back(static_cast<int64_t>(dim));
    }
    uint32_t type = 0;
    RETURN_IF_ERROR(c.Read(&type, absl::StrCat("type of ", info.name)));
    info.type = static_cast<GgmlType>(type);
    int64_t blk = 0, blk_bytes = 0;
    if (!GgmlTypeTraits(info.type, &blk, &blk_bytes)) {
      return c.Error(absl::StrCat("tensor ", info.name, ": unknown ggml type ", type));
    }
    const uint64_t ne0 = info.dims.empty() ? 1 : static_cast<uint64_t>(info.dims[0]);
    if (ne0 % static_cast<uint64_t>(blk) != 0) {
      return c.Error(absl::StrCat("tensor ", info.name, ": row length ", ne0,
                                  " is not a multiple of the ", GgmlTypeName(info.type),
                                  " block size ", blk));
    }
    if (MulOverflow(numel / static_cast<uint64_t>(blk), static_cast<uint64_t>(blk_bytes),
                    &info.bytes)) {
      return c.Error(absl::StrCat("tensor ", info.name, ": size overflows"));
    }
    RETURN_IF_ERROR(c.Read(&info.offset, absl::StrCat("offset of ", info.name)));
    if (info.offset % alignment_ != 0) {
      return c.Error(absl::StrCat("tensor ", info.name, ": offset ", info.offset,
                                  " is not a multiple of the alignment ", alignment_));
    }
    if (tensor_index_.contains(info.name)) {
      return c.Error(absl::StrCat("duplicate tensor ", info.name));
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment (it may be empty).
  const uint64_t pos = c.pos();
  data_start_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = file_->size();
  const uint64_t data_size = data_start_ <= size ? size - data_start_ : 0;
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  extents.reserve(tensors_.size());
  for (const GgufTensorInfo& info : tensors_) {
    if (info.offset > data_size || info.bytes > data_size - info.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF ", path, ": tensor ", info.name, " (offset ", info.offset, ", ", info.bytes,
          " bytes) extends past the end of the file (data section of ", data_size, " bytes)"));
    }
    if (info.bytes > 0) extents.emplace_back(info.offset, info.offset + info.bytes);
  }
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].first < extents[i - 1].second) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF ", path, ": tensor data overlaps at data offset ", extents[i].first));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &values_[it->second];
}

namespace {
absl::Status Missing(const GgufFile& g, const std::string& key) {
  return absl::NotFoundError(absl::StrCat("GGUF ", g.path(), ": metadata key ", key, " is absent"));
}
absl::Status WrongType(const GgufFile& g, const std::string& key, const GgufValue& v,
                       absl::string_view want) {
  std::string have = GgufTypeName(v.type);
  if (v.type == GgufType::kArray) have = absl::StrCat("array of ", GgufTypeName(v.elem_type));
  return absl::InvalidArgumentError(
      absl::StrCat("GGUF ", g.path(), ": metadata ", key, " is ", have, ", expected ", want));
}
}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kString) return WrongType(*this, key, *v, "string");
  return v->str;
}

absl::StatusOr<int64_t> GgufFile::GetInt(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (!IsIntType(v->type)) return WrongType(*this, key, *v, "an integer");
  if (v->type == GgufType::kUint64 && v->u > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", path(), ": metadata ", key, " = ", v->u, " is out of range"));
  }
  return v->i;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (!IsIntType(v->type)) return WrongType(*this, key, *v, "an integer");
  if (!IsUnsignedType(v->type) && v->i < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", path(), ": metadata ", key, " = ", v->i, " is negative"));
  }
  return v->u;
}

absl::StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kFloat32 && v->type != GgufType::kFloat64 && !IsIntType(v->type)) {
    return WrongType(*this, key, *v, "a number");
  }
  return v->f;
}

absl::StatusOr<bool> GgufFile::GetBool(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kBool) return WrongType(*this, key, *v, "bool");
  return v->b;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kString) {
    return WrongType(*this, key, *v, "array of string");
  }
  return v->strings;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kArray || !IsIntType(v->elem_type)) {
    return WrongType(*this, key, *v, "array of integers");
  }
  const size_t es = GgufScalarSize(v->elem_type);
  std::vector<int64_t> out(static_cast<size_t>(v->count));
  for (size_t e = 0; e < out.size(); ++e) {
    GgufValue x;
    DecodeScalar(v->elem_type, v->raw + e * es, &x);
    if (v->elem_type == GgufType::kUint64 && x.u > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF ", path(), ": metadata ", key, "[", e, "] is out of range"));
    }
    out[e] = x.i;
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(*this, key);
  if (v->type != GgufType::kArray ||
      (v->elem_type != GgufType::kFloat32 && v->elem_type != GgufType::kFloat64 &&
       !IsIntType(v->elem_type))) {
    return WrongType(*this, key, *v, "array of numbers");
  }
  const size_t es = GgufScalarSize(v->elem_type);
  std::vector<float> out(static_cast<size_t>(v->count));
  for (size_t e = 0; e < out.size(); ++e) {
    GgufValue x;
    DecodeScalar(v->elem_type, v->raw + e * es, &x);
    out[e] = static_cast<float>(x.f);
  }
  return out;
}

absl::StatusOr<int64_t> GgufFile::GetIntOr(const std::string& key, int64_t fallback) const {
  return Has(key) ? GetInt(key) : absl::StatusOr<int64_t>(fallback);
}
absl::StatusOr<double> GgufFile::GetFloatOr(const std::string& key, double fallback) const {
  return Has(key) ? GetFloat(key) : absl::StatusOr<double>(fallback);
}
absl::StatusOr<bool> GgufFile::GetBoolOr(const std::string& key, bool fallback) const {
  return Has(key) ? GetBool(key) : absl::StatusOr<bool>(fallback);
}
absl::StatusOr<std::string> GgufFile::GetStringOr(const std::string& key,
                                                  std::string fallback) const {
  return Has(key) ? GetString(key) : absl::StatusOr<std::string>(std::move(fallback));
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<TensorView> GgufFile::View(const std::string& name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (!info) {
    return absl::NotFoundError(absl::StrCat("GGUF ", path(), ": no tensor named ", name));
  }
  return View(*info);
}

absl::StatusOr<TensorView> GgufFile::View(const GgufTensorInfo& info) const {
  TensorView v;
  v.name = info.name;
  switch (info.type) {
    case GgmlType::kF32:
      v.dtype = DType::kF32;
      break;
    case GgmlType::kF16:
      v.dtype = DType::kF16;
      break;
    case GgmlType::kBF16:
      v.dtype = DType::kBF16;
      break;
    case GgmlType::kQ8_0:
      v.storage = StorageType::kQ8_0;
      break;
    case GgmlType::kQ4_0:
      v.storage = StorageType::kQ4_0;
      break;
    default: {
      const char* tn = GgmlTypeName(info.type);
      return absl::UnimplementedError(absl::StrCat(
          "GGUF ", path(), ": tensor ", info.name, " has ggml type ", tn ? tn : "unknown", " (",
          static_cast<uint32_t>(info.type), "); supported: F32, F16, BF16, Q8_0, Q4_0"));
    }
  }
  v.shape.assign(info.dims.rbegin(), info.dims.rend());
  v.data = file_->data() + data_start_ + info.offset;
  v.bytes = static_cast<size_t>(info.bytes);
  v.owner = file_;
  return v;
}

}  // namespace compressd
