// Conformance against llama.cpp's tokenizer test vectors (../shared/testdata/tokenizers):
// each .inp holds cases separated by "\n__ggml_vocab_test__\n" (the file ends with one), and
// the .out holds one line per case with the expected ids, space separated, without BOS
// (encoded with add_special=false, parse_special=false). Llama 3 and Qwen2 come from
// tokenizer.json files fetched by scripts/fetch-tokenizers.sh.
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::vector<Case> ReadCases(const std::string& inp_path, const std::string& out_path) {
  const std::string inp = testing::ReadFileOrDie(inp_path);
  const std::string out = testing::ReadFileOrDie(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  size_t pos = 0;
  while (pos < inp.size()) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    cases.push_back({inp.substr(pos, next - pos), {}});
    pos = next + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (Case& c : cases) {
    if (!std::getline(lines, line)) {
      ADD_FAILURE() << out_path << " has fewer lines than " << inp_path << " has cases";
      break;
    }
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) c.ids.push_back(id);
  }
  return cases;
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

void CheckCases(const Tokenizer& tok, const std::string& name) {
  REQUIRE_SHARED(inp, "testdata/tokenizers/ggml-vocab-" + name + ".gguf.inp");
  REQUIRE_SHARED(out, "testdata/tokenizers/ggml-vocab-" + name + ".gguf.out");
  const std::vector<Case> cases = ReadCases(inp, out);
  ASSERT_GT(cases.size(), 40u);
  int passed = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> got = tok.Encode(c.text, /*add_special=*/false,
                                                /*parse_special=*/false);
    EXPECT_EQ(Show(got), Show(c.ids)) << name << " case '" << c.text << "'";
    EXPECT_EQ(tok.Decode(c.ids), c.text) << name << " decode of case '" << c.text << "'";
    passed += got == c.ids;
  }
  std::cout << name << ": " << passed << "/" << cases.size() << " cases match\n";
}

std::unique_ptr<Tokenizer> FromGguf(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  auto vocab = ReadGgufVocab(**file);
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  if (!vocab.ok()) return nullptr;
  auto tok = Tokenizer::FromVocab(*std::move(vocab));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// The folder holding llama3/ and qwen3/ tokenizer.json, fetched on demand; empty if absent.
std::string TokenizerCache() {
  const char* env = std::getenv("COMPRESSD_TOKENIZER_CACHE");
  const std::string dir = env != nullptr ? env : testing::BinaryDir() + "/tokenizers";
  auto complete = [&] {
    return Exists(dir + "/llama3/tokenizer.json") && Exists(dir + "/qwen3/tokenizer.json");
  };
  if (complete()) return dir;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const std::string cmd = "'" + testing::SourceDir() + "/scripts/fetch-tokenizers.sh' '" +
                            dir + "' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) return "";
  }
  return complete() ? dir : "";
}

TEST(TokenizerConformanceTest, LlamaSpmGguf) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-llama-spm.gguf");
  auto tok = FromGguf(path);
  ASSERT_NE(tok, nullptr);
  CheckCases(*tok, "llama-spm");
}

TEST(TokenizerConformanceTest, Phi3Gguf) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-phi-3.gguf");
  auto tok = FromGguf(path);
  ASSERT_NE(tok, nullptr);
  CheckCases(*tok, "phi-3");
}

TEST(TokenizerConformanceTest, Gpt2Gguf) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  auto tok = FromGguf(path);
  ASSERT_NE(tok, nullptr);
  CheckCases(*tok, "gpt-2");
}

TEST(TokenizerConformanceTest, Llama3Json) {
  REQUIRE_SHARED(inp, "testdata/tokenizers/ggml-vocab-llama-bpe.gguf.inp");
  const std::string cache = TokenizerCache();
  if (cache.empty()) GTEST_SKIP() << "llama3 tokenizer.json unavailable (npm offline?)";
  auto tok = Tokenizer::FromDirectory(cache + "/llama3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  CheckCases(**tok, "llama-bpe");
  const std::vector<int32_t> chat =
      (*tok)->Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", false);
  ASSERT_FALSE(chat.empty());
  EXPECT_EQ((*tok)->Piece(chat.front()), "<|start_header_id|>");
  EXPECT_TRUE((*tok)->IsEndOfGeneration(chat.back()));
}

TEST(TokenizerConformanceTest, Qwen2Json) {
  REQUIRE_SHARED(inp, "testdata/tokenizers/ggml-vocab-qwen2.gguf.inp");
  const std::string cache = TokenizerCache();
  if (cache.empty()) GTEST_SKIP() << "qwen tokenizer.json unavailable (npm offline?)";
  auto tok = Tokenizer::FromDirectory(cache + "/qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  CheckCases(**tok, "qwen2");
  const std::vector<int32_t> chat = (*tok)->Encode("<|im_start|>user\nHi<|im_end|>", false);
  ASSERT_FALSE(chat.empty());
  EXPECT_EQ((*tok)->Piece(chat.front()), "<|im_start|>");
  EXPECT_TRUE((*tok)->IsEndOfGeneration(chat.back()));
  EXPECT_FALSE((*tok)->chat_template().empty());
}

}  // namespace
}  // namespace compressd
