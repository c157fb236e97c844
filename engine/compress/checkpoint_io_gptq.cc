// GPTQ / AWQ 4-bit Hugging Face checkpoints (see checkpoint_io.h, WrapQuantizedSafetensors).
//   GPTQ (AutoGPTQ): qweight I32 [in/8][out], nibble i%8 of qweight[i/8][o] = code of W[o][i];
//                    qzeros I32 [groups][out/8], nibble o%8 = zero - 1 ("gptq_v2": zero);
//                    scales F16 [groups][out]; g_idx I32 [in] = group of input i.
//   AWQ (AutoAWQ GEMM): qweight I32 [in][out/8], qzeros I32 [groups][out/8], packed in the
//                    order [0,2,4,6,1,3,5,7] along out; zero stored as is; no g_idx.
//   W[o][i] = scale[g][o] * (q - zero[g][o]), g = g_idx[i] (or i / group_size).
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/compress/checkpoint_io.h"
#include "engine/compress/sparse_util.h"
#include "engine/core/logging.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd {
namespace {

using nlohmann::json;

constexpr int kAwqInverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // output offset -> nibble

struct Unpacked {
  int64_t rows = 0, cols = 0, groups = 0, group_size = 0;
  std::vector<uint8_t> codes;   // [rows][cols]
  std::vector<float> scale;     // [rows][groups]
  std::vector<float> zero;      // [rows][groups]
  std::vector<int32_t> g_of;    // [cols]
  bool contiguous_groups = true;
};

int32_t I32At(const TensorView& t, int64_t i) {
  int32_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + i * 4, 4);
  return v;
}

class GptqSource : public StoredLinearSource {
 public:
  GptqSource(std::unique_ptr<SafetensorsSource> src, bool awq, bool v2, int cfg_group)
      : src_(std::move(src)), awq_(awq), v2_(v2), cfg_group_(cfg_group) {
    for (const std::string& n : src_->Names()) {
      if (absl::EndsWith(n, ".qweight")) bases_.insert(n.substr(0, n.size() - 8));
    }
  }

  std::vector<std::string> Names() const override {
    std::vector<std::string> out;
    for (const std::string& n : src_->Names()) {
      bool part = false;
      for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx"}) {
        if (absl::EndsWith(n, s) && bases_.contains(n.substr(0, n.size() - std::strlen(s)))) part = true;
      }
      if (!part) out.push_back(n);
    }
    for (const std::string& b : bases_) out.push_back(b + ".weight");
    std::sort(out.begin(), out.end());
    return out;
  }
  bool Has(const std::string& name) const override { return HasLinear(name) || src_->Has(name); }
  std::string Describe() const override { return src_->Describe(); }
  bool AllowsRecompression() const override { return true; }
  bool HasLinear(const std::string& name) const override {
    return absl::EndsWith(name, ".weight") && bases_.contains(name.substr(0, name.size() - 7));
  }

  absl::StatusOr<TensorView> Get(const std::string& name) const override {
    if (!HasLinear(name)) return src_->Get(name);
    ASSIGN_OR_RETURN(Unpacked u, Unpack(name));
    auto buf = std::make_shared<std::vector<float>>(static_cast<size_t>(u.rows * u.cols));
    for (int64_t r = 0; r < u.rows; ++r) {
      for (int64_t c = 0; c < u.cols; ++c) {
        const int64_t g = u.g_of[c];
        (*buf)[r * u.cols + c] =
            u.scale[r * u.groups + g] * (static_cast<float>(u.codes[r * u.cols + c]) - u.zero[r * u.groups + g]);
      }
    }
    TensorView t;
    t.name = name;
    t.dtype = DType::kF32;
    t.shape = {u.rows, u.cols};
    t.data = buf->data();
    t.bytes = buf->size() * 4;
    t.owner = std::shared_ptr<const void>(buf, buf->data());
    return t;
  }

  absl::StatusOr<Linear> LoadLinear(const std::string& name) const override {
    ASSIGN_OR_RETURN(Unpacked u, Unpack(name));
    const kernels::WeightFormat f = kernels::GroupFormat(4, static_cast<int>(u.group_size));
    if (u.contiguous_groups && kernels::GemmSupports(f) && u.cols % u.group_size == 0) {
      std::vector<float> mins(u.scale.size());
      for (size_t i = 0; i < mins.size(); ++i) mins[i] = -u.zero[i] * u.scale[i];
      kernels::PackedQuant q = kernels::PackGroupCodes(u.codes.data(), u.scale.data(), mins.data(),
                                                       u.rows, u.cols, 4, static_cast<int>(u.group_size));
      return LinearFromBuffers(q.view.format, u.rows, u.cols, std::move(q.buffers),
                               absl::StrCat("int4-g", u.group_size, awq_ ? "-awq" : "-gptq"));
    }
    LOG_WARN("{}: {} cannot keep its 4-bit groups ({}); converted to BF16", Describe(), name,
             u.contiguous_groups ? "group size unsupported by the int4 kernels"
                                 : "act-order g_idx");
    ASSIGN_OR_RETURN(TensorView t, Get(name));
    return MakeDenseLinear(t, DType::kBF16);
  }

 private:
  absl::StatusOr<Unpacked> Unpack(const std::string& name) const {
    const std::string base = name.substr(0, name.size() - 7);
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(Describe(), ": ", base, ": ", why));
    };
    ASSIGN_OR_RETURN(TensorView qw, src_->Get(base + ".qweight"));
    ASSIGN_OR_RETURN(TensorView qz, src_->Get(base + ".qzeros"));
    ASSIGN_OR_RETURN(TensorView sc, src_->Get(base + ".scales"));
    if (qw.dtype != DType::kI32 || qz.dtype != DType::kI32 || qw.shape.size() != 2 ||
        qz.shape.size() != 2 || sc.shape.size() != 2) {
      return bad("qweight/qzeros must be 2-D I32 and scales 2-D");
    }
    if (sc.dtype != DType::kF16 && sc.dtype != DType::kF32 && sc.dtype != DType::kBF16) {
      return bad("scales must be F16, BF16 or F32");
    }
    Unpacked u;
    u.cols = awq_ ? qw.shape[0] : qw.shape[0] * 8;
    u.rows = awq_ ? qw.shape[1] * 8 : qw.shape[1];
    u.groups = sc.shape[0];
    if (sc.shape[1] != u.rows || qz.shape[0] != u.groups || qz.shape[1] * 8 != u.rows ||
        u.groups <= 0 || u.cols % u.groups != 0) {
      return bad("qweight/qzeros/scales shapes disagree (4-bit only)");
    }
    u.group_size = cfg_group_ > 0 ? cfg_group_ : u.cols / u.groups;
    ASSIGN_OR_RETURN(std::vector<float> scales, TensorToF32(sc));
    u.codes.resize(static_cast<size_t>(u.rows * u.cols));
    u.scale.resize(static_cast<size_t>(u.rows * u.groups));
    u.zero.resize(u.scale.size());
    u.g_of.resize(static_cast<size_t>(u.cols));
    for (int64_t c = 0; c < u.cols; ++c) u.g_of[c] = static_cast<int32_t>(c / u.group_size);
    if (src_->Has(base + ".g_idx") && !awq_) {
      ASSIGN_OR_RETURN(TensorView gi, src_->Get(base + ".g_idx"));
      if (gi.dtype != DType::kI32 || gi.numel() != u.cols) return bad("g_idx must be I32 [in]");
      for (int64_t c = 0; c < u.cols; ++c) {
        const int32_t g = I32At(gi, c);
        if (g < 0 || g >= u.groups) return bad("g_idx out of range");
        if (g != u.g_of[c]) u.contiguous_groups = false;
        u.g_of[c] = g;
      }
    }
    if (u.group_size * u.groups != u.cols) u.contiguous_groups = false;
    for (int64_t r = 0; r < u.rows; ++r) {
      for (int64_t c = 0; c < u.cols; ++c) {
        const uint32_t word = awq_ ? static_cast<uint32_t>(I32At(qw, c * (u.rows / 8) + r / 8))
                                   : static_cast<uint32_t>(I32At(qw, (c / 8) * u.rows + r));
        const int shift = awq_ ? 4 * kAwqInverse[r % 8] : 4 * static_cast<int>(c % 8);
        u.codes[r * u.cols + c] = static_cast<uint8_t>((word >> shift) & 15u);
      }
      for (int64_t g = 0; g < u.groups; ++g) {
        const uint32_t zw = static_cast<uint32_t>(I32At(qz, g * (u.rows / 8) + r / 8));
        const int shift = 4 * (awq_ ? kAwqInverse[r % 8] : static_cast<int>(r % 8));
        const float z = static_cast<float>((zw >> shift) & 15u) + (awq_ || v2_ ? 0.0f : 1.0f);
        u.zero[r * u.groups + g] = z;
        u.scale[r * u.groups + g] = scales[g * u.rows + r];
      }
    }
    return u;
  }

  std::unique_ptr<SafetensorsSource> src_;
  bool awq_, v2_;
  int cfg_group_;
  absl::flat_hash_set<std::string> bases_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> WrapQuantizedSafetensors(
    std::unique_ptr<SafetensorsSource> src, const std::string& dir) {
  bool any = false;
  for (const std::string& n : src->Names()) any = any || absl::EndsWith(n, ".qweight");
  if (!any) return std::unique_ptr<TensorSource>(std::move(src));
  json qc = json::object();
  std::ifstream f(dir + "/config.json");
  if (f) {
    json cfg = json::parse(f, nullptr, false);
    if (cfg.is_object() && cfg.contains("quantization_config") && cfg["quantization_config"].is_object()) {
      qc = cfg["quantization_config"];
    }
  }
  const int bits = qc.value("bits", qc.value("w_bit", 4));
  if (bits != 4) {
    return absl::UnimplementedError(absl::StrCat(
        src->Describe(), ": GPTQ/AWQ checkpoints are supported with 4-bit weights only (bits = ",
        bits, ")"));
  }
  const std::string method = qc.value("quant_method", std::string("gptq"));
  const bool v2 = qc.value("checkpoint_format", std::string()) == "gptq_v2";
  const int group = qc.value("group_size", qc.value("q_group_size", 0));
  return std::unique_ptr<TensorSource>(
      std::make_unique<GptqSource>(std::move(src), method == "awq", v2, group));
}

}  // namespace compressd
