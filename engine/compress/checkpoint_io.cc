#include "engine/compress/checkpoint_io.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/logging.h"
#include "kernels/dfloat11.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/sparse.h"

namespace compressd {
namespace {

using nlohmann::json;

struct Entry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t bytes;
};

const char* StDtype(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    default: return nullptr;
  }
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<Entry>& entries,
                              const json& metadata) {
  json header = json::object();
  uint64_t off = 0;
  std::vector<uint64_t> starts;
  for (const Entry& e : entries) {
    off = (off + 63) / 64 * 64;
    starts.push_back(off);
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes}}};
    off += e.bytes;
  }
  header["__metadata__"] = metadata;
  std::string h = header.dump();
  while ((8 + h.size()) % 64 != 0) h.push_back(' ');
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const uint64_t hl = h.size();
  f.write(reinterpret_cast<const char*>(&hl), 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  uint64_t pos = 0;
  static const char kZeros[64] = {};
  for (size_t i = 0; i < entries.size(); ++i) {
    f.write(kZeros, static_cast<std::streamsize>(starts[i] - pos));
    f.write(static_cast<const char*>(entries[i].data), static_cast<std::streamsize>(entries[i].bytes));
    pos = starts[i] + entries[i].bytes;
  }
  if (!f.flush()) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

json FormatJson(const Linear& l) {
  const kernels::WeightFormat& f = l.w.format;
  json j = {{"rows", l.w.rows},
            {"cols", l.w.cols},
            {"format_name", l.format_name},
            {"kind", static_cast<int>(f.kind)},
            {"dtype", static_cast<int>(f.dtype)},
            {"bits", static_cast<int>(f.bits)},
            {"symmetric", f.symmetric},
            {"group_size", f.group_size},
            {"rank", f.rank},
            {"sparsity", static_cast<int>(f.sparsity)},
            {"variant", f.variant}};
  if (l.first) j["first"] = FormatJson(*l.first);
  return j;
}

void AddLinear(const std::string& name, const Linear& l, std::vector<Entry>* out) {
  if (l.w.data_bytes) out->push_back({name + ".data", "U8", {static_cast<int64_t>(l.w.data_bytes)}, l.w.data, l.w.data_bytes});
  for (int i = 0; i < 4; ++i) {
    if (l.w.aux_bytes[i] == 0) continue;
    out->push_back({absl::StrCat(name, ".aux", i), "U8", {static_cast<int64_t>(l.w.aux_bytes[i])},
                    l.w.aux[i], l.w.aux_bytes[i]});
  }
  if (l.first) AddLinear(name + ".first", *l.first, out);
}

std::string BiasName(const std::string& weight_name) {
  return absl::EndsWith(weight_name, ".weight")
             ? weight_name.substr(0, weight_name.size() - 7) + ".bias"
             : weight_name + ".bias";
}

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  if (!in) return absl::NotFoundError(from);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  if (!out.flush()) return absl::DataLossError(absl::StrCat("cannot write ", to));
  return absl::OkStatus();
}

std::vector<std::pair<std::string, const Linear*>> ModelLinears(const Model& m) {
  std::vector<std::pair<std::string, const Linear*>> v;
  for (size_t i = 0; i < m.weights.layers.size(); ++i) {
    const LayerWeights& L = m.weights.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    v.push_back({p + "self_attn.q_proj.weight", &L.q});
    v.push_back({p + "self_attn.k_proj.weight", &L.k});
    v.push_back({p + "self_attn.v_proj.weight", &L.v});
    v.push_back({p + "self_attn.o_proj.weight", &L.o});
    v.push_back({p + "mlp.gate_proj.weight", &L.gate});
    v.push_back({p + "mlp.up_proj.weight", &L.up});
    v.push_back({p + "mlp.down_proj.weight", &L.down});
  }
  v.push_back({"lm_head.weight", &m.weights.lm_head});
  return v;
}

}  // namespace

absl::Status SaveCompressedCheckpoint(const Model& m, const std::string& out_dir,
                                      const std::string& source_dir_in) {
  const std::string source_dir = source_dir_in.empty() ? m.id : source_dir_in;
  if (!IsDir(source_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compressed checkpoints are written from a Hugging Face folder (config.json + "
        "tokenizer); '", source_dir, "' is not one"));
  }
  if (!IsDir(out_dir) && ::mkdir(out_dir.c_str(), 0755) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir));
  }
  std::vector<Entry> entries;
  std::vector<std::vector<float>> keep_alive;
  json linears = json::object();
  for (const auto& [name, l] : ModelLinears(m)) {
    for (const Linear* x = l; x != nullptr; x = x->first.get()) {
      if (x->w.format.layout != 0) {
        // Codes in a kernel's own order (UseCpuKernelLayouts): checkpoints hold the canonical one.
        return absl::FailedPreconditionError(absl::StrCat(
            name, " holds its codes in a CPU kernel's order; save a model loaded without "
            "LoadOptions::cpu_kernel_layouts (as `compressd compress` does)"));
      }
    }
    AddLinear(name, *l, &entries);
    linears[name] = FormatJson(*l);
    if (!l->bias.empty()) {
      entries.push_back({BiasName(name), "F32", {static_cast<int64_t>(l->bias.size())},
                         l->bias.data(), l->bias.size() * sizeof(float)});
    }
  }
  auto add_vec = [&](const std::string& name, const std::vector<float>& v) {
    entries.push_back({name, "F32", {static_cast<int64_t>(v.size())}, v.data(), v.size() * 4});
  };
  for (size_t i = 0; i < m.weights.layers.size(); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add_vec(p + "input_layernorm.weight", m.weights.layers[i].attn_norm);
    add_vec(p + "post_attention_layernorm.weight", m.weights.layers[i].ffn_norm);
  }
  add_vec("model.norm.weight", m.weights.final_norm);
  const TensorView& e = m.weights.embed;
  if (e.storage != StorageType::kPlain || StDtype(e.dtype) == nullptr) {
    return absl::UnimplementedError(
        "compressed checkpoint: the embedding must be plain F32/F16/BF16");
  }
  entries.push_back({"model.embed_tokens.weight", StDtype(e.dtype), e.shape, e.data,
                     static_cast<size_t>(e.numel()) * kernels::DTypeSize(e.dtype)});
  json meta = {{"format", "compressd"},
               {"version", 1},
               {"source_model", m.id},
               {"recipe", m.weight_recipe},
               {"linears", linears}};
  RETURN_IF_ERROR(WriteSafetensors(out_dir + "/model.safetensors", entries,
                                   json{{"format", "pt"}, {"compressd", "1"}}));
  {
    std::ofstream f(out_dir + "/" + kCompressedMetadataFile, std::ios::trunc);
    f << meta.dump(1) << "\n";
    if (!f.flush()) return absl::DataLossError(absl::StrCat("cannot write ", out_dir));
  }
  RETURN_IF_ERROR(CopyFile(source_dir + "/config.json", out_dir + "/config.json"));
  for (const char* t : {"tokenizer.json", "tokenizer_config.json"}) {
    absl::Status s = CopyFile(source_dir + "/" + t, out_dir + "/" + t);
    if (!s.ok() && t == std::string("tokenizer.json")) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CompressedCheckpointSource>> CompressedCheckpointSource::Open(
    const std::string& dir) {
  const std::string path = dir + "/" + kCompressedMetadataFile;
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat(path, " is missing"));
  auto src = std::unique_ptr<CompressedCheckpointSource>(new CompressedCheckpointSource());
  src->meta_ = json::parse(f, nullptr, /*allow_exceptions=*/false);
  const json& m = src->meta_;
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != "compressd" ||
      !m.contains("linears") || !m["linears"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a compressd metadata file"));
  }
  if (!m.contains("version") || !m["version"].is_number_integer() || m["version"] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported version"));
  }
  for (auto it = m["linears"].begin(); it != m["linears"].end(); ++it) {
    src->linears_[it.key()] = it.value();
  }
  ASSIGN_OR_RETURN(src->tensors_, SafetensorsSource::Open(dir + "/model.safetensors"));
  return src;
}

std::vector<std::string> CompressedCheckpointSource::Names() const {
  std::vector<std::string> names;
  for (const std::string& n : tensors_->Names()) {
    bool part = false;
    for (const auto& [ln, e] : linears_) {
      if (absl::StartsWith(n, ln + ".") && !absl::EndsWith(n, ".bias")) part = true;
    }
    if (!part) names.push_back(n);
  }
  for (const auto& [ln, e] : linears_) names.push_back(ln);
  std::sort(names.begin(), names.end());
  return names;
}

bool CompressedCheckpointSource::Has(const std::string& name) const {
  return linears_.contains(name) || tensors_->Has(name);
}

absl::StatusOr<TensorView> CompressedCheckpointSource::Get(const std::string& name) const {
  auto it = linears_.find(name);
  if (it == linears_.end()) return tensors_->Get(name);
  TensorView t;
  t.name = name;
  t.dtype = DType::kU8;
  // Low-rank: the layer's input width is that of its first factor.
  const json& in = it->second.contains("first") && it->second["first"].is_object()
                       ? it->second["first"]
                       : it->second;
  t.shape = {it->second.value("rows", int64_t{0}), in.value("cols", int64_t{0})};
  return t;
}

absl::StatusOr<Linear> CompressedCheckpointSource::LoadLinear(const std::string& name) const {
  auto it = linears_.find(name);
  if (it == linears_.end()) return absl::NotFoundError(absl::StrCat("no stored linear ", name));
  return Build(name, it->second);
}

absl::StatusOr<Linear> CompressedCheckpointSource::Build(const std::string& name,
                                                         const json& e) const {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": stored linear ", name, ": ", why));
  };
  static const std::set<std::string> kKnown = {"rows",     "cols",       "format_name", "kind",
                                               "dtype",    "bits",       "symmetric",   "group_size",
                                               "rank",     "sparsity",   "variant",     "first"};
  if (!e.is_object()) return bad("entry is not an object");
  for (auto it = e.begin(); it != e.end(); ++it) {
    if (!kKnown.count(it.key())) return bad(absl::StrCat("unknown format field '", it.key(), "'"));
  }
  for (const char* k : {"rows", "cols", "kind", "dtype", "bits", "group_size", "rank", "sparsity",
                        "variant"}) {
    if (!e.contains(k) || !e[k].is_number_integer()) {
      return bad(absl::StrCat("field '", k, "' is missing or not an integer"));
    }
  }
  Linear l;
  l.w.rows = e["rows"];
  l.w.cols = e["cols"];
  const int kind = e["kind"], dtype = e["dtype"], bits = e["bits"], sp = e["sparsity"];
  if (l.w.rows <= 0 || l.w.cols <= 0) return bad("rows/cols must be positive");
  if (kind < 0 || kind > 5) return bad("unknown kind");
  if (dtype < 0 || dtype > 9) return bad("unknown dtype");
  if (bits < 0 || bits > 32) return bad("bad bits");
  if (sp < 0 || sp > 3) return bad("unknown sparsity");
  kernels::WeightFormat& f = l.w.format;
  f.kind = static_cast<kernels::WeightKind>(kind);
  f.dtype = static_cast<DType>(dtype);
  f.bits = static_cast<uint8_t>(bits);
  f.symmetric = e.value("symmetric", true);
  f.group_size = e["group_size"];
  f.rank = e["rank"];
  f.sparsity = static_cast<kernels::SparsityPattern>(sp);
  f.variant = e["variant"];
  l.format_name = e.value("format_name", std::string("?"));
  auto buffer = [&](const std::string& tname, const void** ptr, size_t* bytes) -> absl::Status {
    if (!tensors_->Has(tname)) return absl::OkStatus();
    ASSIGN_OR_RETURN(TensorView t, tensors_->Get(tname));
    if (t.dtype != DType::kU8) return bad(absl::StrCat(tname, " must be U8"));
    *ptr = t.data;
    *bytes = t.bytes;
    l.storage.push_back(t.owner);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(buffer(name + ".data", &l.w.data, &l.w.data_bytes));
  for (int i = 0; i < 4; ++i) {
    RETURN_IF_ERROR(buffer(absl::StrCat(name, ".aux", i), &l.w.aux[i], &l.w.aux_bytes[i]));
  }
  if (!kernels::GemmSupports(f)) return bad("format not supported by this build's kernels");
  std::string why;
  if (f.kind == kernels::WeightKind::kDense) {
    if (l.w.data_bytes != kernels::DenseBytes(f.dtype, l.w.rows, l.w.cols)) why = "data size";
  } else if (f.kind == kernels::WeightKind::kSparse) {
    why = kernels::ValidateSparse(l.w);
  } else if (f.kind == kernels::WeightKind::kEntropy) {
    why = kernels::ValidateDf11(l.w);
  } else if (f.kind == kernels::WeightKind::kQuant && f.variant >= 100) {
    why = kernels::ValidateGgufQuant(l.w);
  } else if (l.w.data_bytes == 0) {
    why = "data is missing";
  }
  if (!why.empty()) return bad(why);
  if (e.contains("first")) {
    ASSIGN_OR_RETURN(Linear v, Build(name + ".first", e["first"]));
    if (v.w.rows != l.w.cols) return bad("first.rows must equal cols of the second factor");
    l.first = std::make_shared<const Linear>(std::move(v));
  }
  return l;
}

LinearFactory StoredLinearFactory(const StoredLinearSource* src) {
  return [src](const std::string& name, const TensorView& t) -> absl::StatusOr<Linear> {
    if (src->HasLinear(name)) return src->LoadLinear(name);
    return MakeDenseLinear(t, t.dtype == DType::kF32 || t.dtype == DType::kF16 ||
                                      t.dtype == DType::kBF16
                                  ? t.dtype
                                  : DType::kBF16);
  };
}

}  // namespace compressd
