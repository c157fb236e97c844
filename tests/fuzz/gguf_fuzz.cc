// Fuzzes the GGUF reader: OpenFromBytes, every metadata accessor on every key, the
// tokenizer reader (ReadGgufVocab, then a Tokenizer built from it), every tensor view, and
// the HF-name model source (OpenGgufModel).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/gguf.h"
#include "engine/model/gguf_source.h"
#include "engine/model/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using compressd::GgufFile;
  auto gguf = GgufFile::OpenFromBytes(std::string(reinterpret_cast<const char*>(data), size));
  if (!gguf.ok()) return 0;
  const GgufFile& g = **gguf;
  for (const std::string& key : g.keys()) {
    (void)g.Find(key);
    (void)g.GetString(key);
    (void)g.GetInt(key);
    (void)g.GetUint(key);
    (void)g.GetFloat(key);
    (void)g.GetBool(key);
    (void)g.GetStringArray(key);
    (void)g.GetIntArray(key);
    (void)g.GetFloatArray(key);
  }
  for (const auto& info : g.tensors()) {
    auto view = g.View(info);
    if (view.ok()) compressd::fuzz::Touch(*view);
    (void)g.FindTensor(info.name);
  }
  auto vocab = compressd::ReadGgufVocab(g);
  if (vocab.ok()) {
    auto tok = compressd::Tokenizer::FromVocab(*std::move(vocab));
    if (tok.ok()) {
      const auto ids = (*tok)->Encode("Hello world, <s> 123 \xe2\x96\x81x\n", true);
      (void)(*tok)->Decode(ids);
    }
  }
  compressd::ModelConfig config;
  auto source = compressd::OpenGgufModel(*gguf, &config);
  if (source.ok()) {
    for (const std::string& name : (*source)->Names()) {
      auto view = (*source)->Get(name);
      if (view.ok()) compressd::fuzz::Touch(*view);
    }
  }
  return 0;
}
