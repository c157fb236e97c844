#include "engine/model/checkpoint.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/compress/checkpoint_io.h"
#include "engine/model/gguf_source.h"
#include "engine/model/safetensors.h"

namespace compressd {
namespace {

bool StatPath(const std::string& p, struct stat* st) { return ::stat(p.c_str(), st) == 0; }

bool HasGgufMagic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

std::string Parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::StatusOr<ModelConfig> ReadConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", dir, ": config.json is missing (", path, ")"));
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  auto config = ParseHfConfig(ss.str());
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", config.status().message()));
  }
  absl::Status valid = config->Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", valid.message()));
  return config;
}

}  // namespace

absl::StatusOr<LoadedCheckpoint> OpenCheckpoint(const std::string& path) {
  struct stat st;
  if (path.empty() || !StatPath(path, &st)) {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "' does not exist"));
  }
  LoadedCheckpoint ckpt;
  if (S_ISDIR(st.st_mode)) {
    ckpt.dir = path;
    ASSIGN_OR_RETURN(ckpt.config, ReadConfig(path));
    // A compressed checkpoint (engine/compress/checkpoint_io.h): Linears load as stored.
    if (StatPath(path + "/" + kCompressedMetadataFile, &st)) {
      ASSIGN_OR_RETURN(ckpt.tensors, CompressedCheckpointSource::Open(path));
      return ckpt;
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsSource> src, SafetensorsSource::Open(path));
    ASSIGN_OR_RETURN(ckpt.tensors, WrapQuantizedSafetensors(std::move(src), path));  // GPTQ/AWQ
    return ckpt;
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", path, " is not a file or folder"));
  }
  ckpt.dir = Parent(path);
  if (absl::EndsWith(path, ".gguf") || HasGgufMagic(path)) {
    ASSIGN_OR_RETURN(ckpt.gguf, GgufFile::Open(path));
    ASSIGN_OR_RETURN(ckpt.tensors, OpenGgufModel(ckpt.gguf, &ckpt.config));
    return ckpt;
  }
  if (absl::EndsWith(path, ".safetensors") || absl::EndsWith(path, ".index.json")) {
    ASSIGN_OR_RETURN(ckpt.config, ReadConfig(ckpt.dir));
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsSource> src, SafetensorsSource::Open(path));
    ASSIGN_OR_RETURN(ckpt.tensors, WrapQuantizedSafetensors(std::move(src), ckpt.dir));
    return ckpt;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "checkpoint ", path,
      " is neither a folder (config.json + safetensors), a .safetensors file nor a GGUF file"));
}

}  // namespace compressd
