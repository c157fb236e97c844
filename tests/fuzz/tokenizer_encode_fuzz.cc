// Fuzzes Tokenizer::Encode / Decode / StreamDecoder on arbitrary bytes with two real
// tokenizers built once at start-up: stories260K (sentencepiece-style BPE with byte
// fallback) and GPT-2 (byte-level BPE, from its GGUF vocabulary), both read from ../shared
// when present, else the hand-made tests/fuzz/corpus/tokenizers/*.json.
//
// Input: byte 0 = mode bits (bit0 tokenizer, bit1 add_special, bit2 parse_special,
// bit3 "the rest is little-endian int32 ids to decode"), the rest = text or ids.
// Properties checked (a violation traps): every id in [0, vocab); for valid UTF-8 text
// without literal special tokens, Decode(Encode(text)) == text for the byte-level
// tokenizer; StreamDecoder's output equals Decode() whenever Decode() is valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using compressd::Tokenizer;

std::unique_ptr<Tokenizer> LoadSpm() {
  auto tok = Tokenizer::FromDirectory(compressd::fuzz::SharedDir() + "/models/stories260K");
  if (tok.ok()) return *std::move(tok);
  const std::string dir = compressd::fuzz::CorpusDir() + "/tokenizers/";
  tok = Tokenizer::FromJson(compressd::fuzz::ReadFile(dir + "spm_tiny.json"),
                            compressd::fuzz::ReadFile(dir + "spm_tiny_config.json"));
  if (!tok.ok()) {
    std::fprintf(stderr, "no spm tokenizer: %s\n", tok.status().ToString().c_str());
    std::abort();
  }
  return *std::move(tok);
}

std::unique_ptr<Tokenizer> LoadByteLevel() {
  auto gguf = compressd::GgufFile::Open(compressd::fuzz::SharedDir() +
                                        "/testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  if (gguf.ok()) {
    auto vocab = compressd::ReadGgufVocab(**gguf);
    if (vocab.ok()) {
      auto tok = Tokenizer::FromVocab(*std::move(vocab));
      if (tok.ok()) return *std::move(tok);
    }
  }
  auto tok = Tokenizer::FromJson(
      compressd::fuzz::ReadFile(compressd::fuzz::CorpusDir() + "/tokenizers/bytelevel_tiny.json"),
      "");
  if (!tok.ok()) {
    std::fprintf(stderr, "no byte-level tokenizer: %s\n", tok.status().ToString().c_str());
    std::abort();
  }
  return *std::move(tok);
}

const Tokenizer* g_tok[2];

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t d = static_cast<uint8_t>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  compressd::StreamDecoder dec(tok, skip_special);
  std::string out;
  for (int32_t id : ids) out += dec.Append(id);
  out += dec.Flush();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_tok[0] = LoadSpm().release();
  g_tok[1] = LoadByteLevel().release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const Tokenizer& tok = *g_tok[mode & 1];
  const bool add_special = (mode & 2) != 0;
  const bool parse_special = (mode & 4) != 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  std::vector<int32_t> ids;
  if (mode & 8) {
    ids.resize(text.size() / 4);
    if (!ids.empty()) std::memcpy(ids.data(), text.data(), ids.size() * 4);
  } else {
    ids = tok.Encode(text, add_special, parse_special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    }
    // Byte-level BPE is lossless on any valid UTF-8 when specials are not parsed.
    if ((mode & 1) == 1 && !parse_special && ValidUtf8(text)) {
      if (tok.Decode(ids, /*skip_special=*/true) != text) {
        std::fprintf(stderr, "byte-level round trip lost bytes\n");
        __builtin_trap();
      }
    }
  }
  for (bool skip : {true, false}) {
    const std::string whole = tok.Decode(ids, skip);
    const std::string streamed = Stream(tok, ids, skip);
    if (ValidUtf8(whole) && whole != streamed) {
      std::fprintf(stderr, "StreamDecoder differs from Decode\n");
      __builtin_trap();
    }
  }
  return 0;
}
