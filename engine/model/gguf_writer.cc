#include "engine/model/gguf_writer.h"

#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/ggml_blocks.h"
#include "kernels/types.h"

namespace compressd {
namespace {

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

void PutString(std::string* out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}


}  // namespace

void GgufWriter::AddScalar(const std::string& key, GgufType type, const void* v, size_t size) {
  PutString(&kv_, key);
  Put<uint32_t>(&kv_, static_cast<uint32_t>(type));
  kv_.append(static_cast<const char*>(v), size);
  ++n_kv_;
}

void GgufWriter::AddUint8(const std::string& k, uint8_t v) {
  AddScalar(k, GgufType::kUint8, &v, 1);
}
void GgufWriter::AddInt8(const std::string& k, int8_t v) { AddScalar(k, GgufType::kInt8, &v, 1); }
void GgufWriter::AddUint16(const std::string& k, uint16_t v) {
  AddScalar(k, GgufType::kUint16, &v, 2);
}
void GgufWriter::AddInt16(const std::string& k, int16_t v) {
  AddScalar(k, GgufType::kInt16, &v, 2);
}
void GgufWriter::AddUint32(const std::string& k, uint32_t v) {
  AddScalar(k, GgufType::kUint32, &v, 4);
}
void GgufWriter::AddInt32(const std::string& k, int32_t v) {
  AddScalar(k, GgufType::kInt32, &v, 4);
}
void GgufWriter::AddUint64(const std::string& k, uint64_t v) {
  AddScalar(k, GgufType::kUint64, &v, 8);
}
void GgufWriter::AddInt64(const std::string& k, int64_t v) {
  AddScalar(k, GgufType::kInt64, &v, 8);
}
void GgufWriter::AddFloat32(const std::string& k, float v) {
  AddScalar(k, GgufType::kFloat32, &v, 4);
}
void GgufWriter::AddFloat64(const std::string& k, double v) {
  AddScalar(k, GgufType::kFloat64, &v, 8);
}
void GgufWriter::AddBool(const std::string& k, bool v) {
  const uint8_t b = v ? 1 : 0;
  AddScalar(k, GgufType::kBool, &b, 1);
}

void GgufWriter::AddString(const std::string& key, const std::string& v) {
  PutString(&kv_, key);
  Put<uint32_t>(&kv_, static_cast<uint32_t>(GgufType::kString));
  PutString(&kv_, v);
  ++n_kv_;
}

void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& v) {
  PutString(&kv_, key);
  Put<uint32_t>(&kv_, static_cast<uint32_t>(GgufType::kArray));
  Put<uint32_t>(&kv_, static_cast<uint32_t>(GgufType::kString));
  Put<uint64_t>(&kv_, v.size());
  for (const std::string& s : v) PutString(&kv_, s);
  ++n_kv_;
}

void GgufWriter::AddArray(const std::string& key, GgufType elem, const void* data, uint64_t count) {
  PutString(&kv_, key);
  Put<uint32_t>(&kv_, static_cast<uint32_t>(GgufType::kArray));
  Put<uint32_t>(&kv_, static_cast<uint32_t>(elem));
  Put<uint64_t>(&kv_, count);
  kv_.append(static_cast<const char*>(data), count * GgufScalarSize(elem));
  ++n_kv_;
}

void GgufWriter::AddInt32Array(const std::string& key, const std::vector<int32_t>& v) {
  AddArray(key, GgufType::kInt32, v.data(), v.size());
}
void GgufWriter::AddFloat32Array(const std::string& key, const std::vector<float>& v) {
  AddArray(key, GgufType::kFloat32, v.data(), v.size());
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  alignment_ = alignment;
  if (alignment != 32) AddUint32("general.alignment", alignment);
}

absl::Status GgufWriter::AddTensorBytes(const std::string& name, GgmlType type,
                                        const std::vector<int64_t>& shape, std::string bytes) {
  int64_t blk = 0, blk_bytes = 0;
  if (!GgmlTypeTraits(type, &blk, &blk_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GgufWriter: tensor ", name, ": unknown ggml type ", static_cast<uint32_t>(type)));
  }
  if (shape.empty() || shape.size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("GgufWriter: tensor ", name, ": needs 1 to 4 dims"));
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("GgufWriter: ", name, ": dim < 0"));
    numel *= d;
  }
  if (shape.back() % blk != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GgufWriter: tensor ", name, ": row of ",
                                                   shape.back(), " is not whole blocks of ", blk));
  }
  const uint64_t want = static_cast<uint64_t>(numel / blk * blk_bytes);
  if (bytes.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("GgufWriter: tensor ", name, ": ", bytes.size(), " bytes, expected ", want));
  }
  tensors_.push_back({name, type, shape, std::move(bytes)});
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, GgmlType type,
                                   const std::vector<int64_t>& shape, const float* values) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d < 0 ? 0 : d;
  const int64_t ne0 = shape.empty() ? 1 : shape.back();
  std::string bytes;
  switch (type) {
    case GgmlType::kF32:
      bytes.assign(reinterpret_cast<const char*>(values), numel * sizeof(float));
      break;
    case GgmlType::kF16:
    case GgmlType::kBF16: {
      bytes.resize(numel * 2);
      for (int64_t i = 0; i < numel; ++i) {
        const uint16_t h =
            type == GgmlType::kF16 ? kernels::F32ToF16(values[i]) : kernels::F32ToBF16(values[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
      }
      break;
    }
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0: {
      if (ne0 % kGgmlBlockSize != 0) {
        return absl::InvalidArgumentError(absl::StrCat("GgufWriter: tensor ", name, ": row of ",
                                                       ne0, " is not whole blocks of 32"));
      }
      const int64_t blocks = numel / kGgmlBlockSize;
      if (type == GgmlType::kQ8_0) {
        bytes.resize(blocks * sizeof(BlockQ8_0));
        QuantizeRowQ8_0(values, numel, reinterpret_cast<BlockQ8_0*>(bytes.data()));
      } else {
        bytes.resize(blocks * sizeof(BlockQ4_0));
        QuantizeRowQ4_0(values, numel, reinterpret_cast<BlockQ4_0*>(bytes.data()));
      }
      break;
    }
    default:
      break;  // AddTensorBytes reports the type.
  }
  return AddTensorBytes(name, type, shape, std::move(bytes));
}

std::string GgufWriter::Serialize() const {
  std::string out;
  Put<uint32_t>(&out, 0x46554747);  // "GGUF"
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, n_kv_);
  out.append(kv_);
  auto pad = [this](uint64_t n) { return (n + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      Put<uint64_t>(&out, static_cast<uint64_t>(*it));
    }
    Put<uint32_t>(&out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&out, offset);
    offset = pad(offset + t.bytes.size());
  }
  out.resize(pad(out.size()), '\0');
  for (const Tensor& t : tensors_) {
    out.append(t.bytes);
    out.resize(pad(out.size()), '\0');
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return absl::InternalError(absl::StrCat("GgufWriter: cannot create ", path));
  const std::string bytes = Serialize();
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("GgufWriter: cannot write ", path));
  return absl::OkStatus();
}

}  // namespace compressd
