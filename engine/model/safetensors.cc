#include "engine/model/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace compressd {
namespace {

using nlohmann::json;

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool ParseDType(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::kF32}, {"F16", DType::kF16},   {"BF16", DType::kBF16}, {"I8", DType::kI8},
      {"U8", DType::kU8},   {"I32", DType::kI32},   {"I64", DType::kI64},   {"F64", DType::kF64},
      {"I16", DType::kI16}, {"BOOL", DType::kBool},
  };
  for (const auto& [name, t] : kNames) {
    if (s == name) {
      *out = t;
      return true;
    }
  }
  return false;
}

// Parses JSON text; duplicate keys of the top-level object are reported in *dup (nlohmann
// would silently keep the last one). No exception escapes.
bool ParseJsonObject(absl::string_view text, json* out, std::string* dup) {
  try {
    absl::flat_hash_set<std::string> seen;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
          !seen.insert(parsed.get<std::string>()).second && dup->empty()) {
        *dup = parsed.get<std::string>();
      }
      return true;
    };
    *out = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
    return !out->is_discarded() && out->is_object();
  } catch (const std::exception&) {
    return false;
  }
}

// Validates one file image and appends its tensors to *out (and its __metadata__ to *meta).
absl::Status ParseFile(const std::shared_ptr<MmapFile>& file, std::vector<TensorView>* out,
                       std::vector<std::pair<std::string, std::string>>* meta) {
  const std::string& path = file->path();
  auto bad = [&path](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors ", path, ": ", what));
  };
  const uint64_t size = file->size();
  if (size < 8) return bad("file shorter than the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);
  if (header_len > size - 8) {
    return bad(absl::StrCat("header length ", header_len, " exceeds the file size ", size));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  json header;
  std::string dup;
  absl::string_view text(reinterpret_cast<const char*>(file->data() + 8), header_len);
  if (!ParseJsonObject(text, &header, &dup)) return bad("header is not a JSON object");
  if (!dup.empty()) return bad(absl::StrCat("duplicate tensor name ", dup));

  std::vector<std::pair<uint64_t, uint64_t>> extents;  // (begin, end) of non-empty tensors
  std::vector<std::string> owners;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) return bad("__metadata__ must be an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) {
          return bad(absl::StrCat("__metadata__.", m.key(), " must be a string"));
        }
        if (meta) meta->emplace_back(m.key(), m.value().get<std::string>());
      }
      continue;
    }
    auto tbad = [&](absl::string_view what) {
      return bad(absl::StrCat("tensor ", name, ": ", what));
    };
    if (!e.is_object()) return tbad("entry must be an object");
    auto dt = e.find("dtype");
    auto sh = e.find("shape");
    auto off = e.find("data_offsets");
    if (dt == e.end() || !dt->is_string()) return tbad("dtype must be a string");
    TensorView v;
    v.name = name;
    if (!ParseDType(dt->get<std::string>(), &v.dtype)) {
      return tbad(absl::StrCat("unsupported dtype ", dt->get<std::string>()));
    }
    if (sh == e.end() || !sh->is_array()) return tbad("shape must be a list");
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) return tbad("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX)) return tbad("shape entry too large");
      overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
      v.shape.push_back(static_cast<int64_t>(dim));
    }
    if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return tbad("data_offsets must be [begin, end] of non-negative integers");
    }
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return tbad(absl::StrCat("data_offsets [", begin, ", ", end,
                               "] fall outside the data section of ", data_size, " bytes"));
    }
    uint64_t want = 0;
    overflow = overflow || __builtin_mul_overflow(
                               numel, static_cast<uint64_t>(kernels::DTypeSize(v.dtype)), &want);
    if (overflow || want != end - begin) {
      return tbad(absl::StrCat("data_offsets span ", end - begin,
                               " bytes but the shape and dtype need ",
                               overflow ? std::string("more than 2^64") : absl::StrCat(want)));
    }
    v.data = file->data() + data_start + begin;
    v.bytes = static_cast<size_t>(end - begin);
    v.owner = file;
    if (end > begin) extents.emplace_back(begin, end);
    out->push_back(std::move(v));
  }
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].first < extents[i - 1].second) {
      std::string a, b;
      for (const TensorView& v : *out) {
        const uint64_t begin =
            static_cast<uint64_t>(static_cast<const uint8_t*>(v.data) - file->data()) - data_start;
        if (begin == extents[i - 1].first && v.bytes) a = v.name;
        if (begin == extents[i].first && v.bytes) b = v.name;
      }
      return bad(absl::StrCat("tensors ", a, " and ", b, " overlap"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

absl::Status SafetensorsSource::AddFile(std::shared_ptr<MmapFile> file) {
  std::vector<TensorView> views;
  RETURN_IF_ERROR(ParseFile(file, &views, files_.empty() ? &metadata_ : nullptr));
  for (TensorView& v : views) {
    if (tensors_.contains(v.name)) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors ", file->path(), ": tensor ",
                                                     v.name, " also appears in another shard"));
    }
    std::string name = v.name;
    tensors_.emplace(std::move(name), std::move(v));
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsSource>> SafetensorsSource::OpenFromBytes(
    std::string bytes, std::string name) {
  std::unique_ptr<SafetensorsSource> s(new SafetensorsSource());
  s->describe_ = name;
  RETURN_IF_ERROR(s->AddFile(MmapFile::FromBytes(std::move(bytes), std::move(name))));
  return s;
}

absl::StatusOr<std::unique_ptr<SafetensorsSource>> SafetensorsSource::Open(
    const std::string& path_or_dir) {
  std::string file = path_or_dir;
  if (IsDir(path_or_dir)) {
    const std::string single = path_or_dir + "/model.safetensors";
    const std::string index = path_or_dir + "/model.safetensors.index.json";
    if (IsFile(single)) {
      file = single;
    } else if (IsFile(index)) {
      return OpenSharded(path_or_dir, index);
    } else {
      return absl::NotFoundError(absl::StrCat("safetensors: ", path_or_dir,
                                              " holds neither model.safetensors nor "
                                              "model.safetensors.index.json"));
    }
  } else if (absl::EndsWith(path_or_dir, ".index.json")) {
    const size_t slash = path_or_dir.rfind('/');
    return OpenSharded(slash == std::string::npos ? "." : path_or_dir.substr(0, slash),
                       path_or_dir);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<MmapFile> mapped, MmapFile::Open(file));
  std::unique_ptr<SafetensorsSource> s(new SafetensorsSource());
  s->describe_ = file;
  RETURN_IF_ERROR(s->AddFile(std::move(mapped)));
  return s;
}

absl::StatusOr<std::unique_ptr<SafetensorsSource>> SafetensorsSource::OpenSharded(
    const std::string& dir, const std::string& index_path) {
  ASSIGN_OR_RETURN(std::string text, ReadText(index_path));
  auto bad = [&index_path](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors index ", index_path, ": ", what));
  };
  json index;
  std::string dup;
  if (!ParseJsonObject(text, &index, &dup)) return bad("is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) return bad("weight_map must be an object");
  std::vector<std::string> shards;  // in order of first mention
  absl::flat_hash_map<std::string, std::string> shard_of;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      return bad(absl::StrCat("weight_map.", it.key(), " must be a string"));
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard[0] == '/' || absl::StrContains(shard, "..")) {
      return bad(absl::StrCat("weight_map.", it.key(), ": shard name '", shard,
                              "' must be a relative file name"));
    }
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    shard_of.emplace(it.key(), shard);
  }
  if (shards.empty()) return bad("weight_map is empty");
  std::unique_ptr<SafetensorsSource> s(new SafetensorsSource());
  s->describe_ = index_path;
  for (const std::string& shard : shards) {
    const std::string path = dir + "/" + shard;
    auto mapped = MmapFile::Open(path);
    if (!mapped.ok()) {
      if (absl::IsNotFound(mapped.status())) {
        return absl::NotFoundError(absl::StrCat("safetensors index ", index_path, ": shard ", shard,
                                                " is missing (", mapped.status().message(), ")"));
      }
      return mapped.status();
    }
    RETURN_IF_ERROR(s->AddFile(*std::move(mapped)));
  }
  for (const auto& [name, shard] : shard_of) {
    auto it = s->tensors_.find(name);
    const std::string where =
        it == s->tensors_.end()
            ? ""
            : std::static_pointer_cast<const MmapFile>(it->second.owner)->path();
    if (it == s->tensors_.end() || where != dir + "/" + shard) {
      return bad(absl::StrCat("tensor ", name, " is not in its shard ", shard));
    }
  }
  return s;
}

std::vector<std::string> SafetensorsSource::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, v] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

bool SafetensorsSource::Has(const std::string& name) const { return tensors_.contains(name); }

absl::StatusOr<TensorView> SafetensorsSource::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(describe_, ": no tensor named ", name));
  }
  return it->second;
}

}  // namespace compressd
