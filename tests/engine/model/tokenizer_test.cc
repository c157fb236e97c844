// Tokenizer unit tests: the shared spm tokenizers (stories260K, kdocs-7m) encode as their
// merges dictate and round-trip text; byte fallback, special tokens, streaming decode,
// score-based spm from a VocabData; malformed tokenizer.json is INVALID_ARGUMENT.
#include "engine/model/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

std::unique_ptr<Tokenizer> LoadShared(const std::string& dir) {
  auto tok = Tokenizer::FromDirectory(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// The first `n` blank-line-separated paragraphs of a text file.
std::vector<std::string> Paragraphs(const std::string& text, size_t n) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (out.size() < n && pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) out.push_back(text.substr(pos, end - pos));
    pos = end + 2;
  }
  return out;
}

TEST(TokenizerTest, Stories260KEncodesByItsMerges) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto tok = LoadShared(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // "▁Once" = merges "▁ O"? no: "▁O n" then "▁On ce"; "▁upon" = "▁u p" then "▁up on"; ...
  // Worked through the merge ranks by hand (and with a 20-line Python BPE over the file).
  const std::vector<int32_t> expected = {1,   403, 407, 261, 378, 432, 383,
                                         286, 261, 376, 298, 315, 421, 426};
  EXPECT_EQ(tok->Encode("Once upon a time, there was a little girl.", true), expected);
  EXPECT_EQ(tok->Piece(403), "\xE2\x96\x81Once");
  EXPECT_EQ(tok->Decode(expected), "Once upon a time, there was a little girl.");
  // A character outside the 512-piece vocabulary falls back to its UTF-8 bytes: <0xNN> is
  // id 3 + NN.
  const std::vector<int32_t> cat = tok->Encode("\xE7\x8C\xAB", false);
  ASSERT_EQ(cat.size(), 4u);
  EXPECT_EQ(tok->Piece(cat[0]), "\xE2\x96\x81");
  EXPECT_EQ(std::vector<int32_t>(cat.begin() + 1, cat.end()),
            (std::vector<int32_t>{3 + 0xE7, 3 + 0x8C, 3 + 0xAB}));
  EXPECT_EQ(tok->Decode(cat), "\xE7\x8C\xAB");
}

void CheckRoundTrip(const std::string& model) {
  REQUIRE_SHARED(dir, "models/" + model);
  REQUIRE_SHARED(eval, "models/kdocs-7m/eval.txt");
  auto tok = LoadShared(dir);
  ASSERT_NE(tok, nullptr);
  const std::string text = testing::ReadFileOrDie(eval);
  for (const std::string& para : Paragraphs(text, 12)) {
    const std::vector<int32_t> ids = tok->Encode(para, /*add_special=*/true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], tok->bos_id());
    EXPECT_EQ(tok->Decode(ids), para);
    StreamDecoder stream(*tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.Append(id);
    streamed += stream.Flush();
    EXPECT_EQ(streamed, para);
  }
  // The whole 800 KB file (not a timed assertion; the time is printed for the record).
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> all = tok->Encode(text, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << model << ": eval.txt " << text.size() << " bytes -> " << all.size()
            << " tokens in " << secs << " s\n";
  EXPECT_EQ(tok->Decode(all), text);
}

TEST(TokenizerTest, Stories260KRoundTrips) { CheckRoundTrip("stories260K"); }
TEST(TokenizerTest, Kdocs7mRoundTrips) { CheckRoundTrip("kdocs-7m"); }

TEST(TokenizerTest, SpecialTokensMatchOnlyWhenAsked) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto tok = LoadShared(dir);
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> parsed = tok->Encode("a</s>b", false, /*parse_special=*/true);
  ASSERT_EQ(parsed.size(), 3u);  // ▁a </s> ▁b (each raw run gets the ▁ prefix)
  EXPECT_EQ(parsed[1], 2);
  const std::vector<int32_t> literal = tok->Encode("a</s>b", false, /*parse_special=*/false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 2), 0);
  EXPECT_EQ(tok->Decode(literal), "a</s>b");
  EXPECT_TRUE(tok->IsSpecial(2));
  EXPECT_TRUE(tok->IsEndOfGeneration(2));
  EXPECT_FALSE(tok->IsEndOfGeneration(1));
  EXPECT_EQ(tok->Decode({1, 403, 2}, /*skip_special=*/false), "<s> Once</s>");
  EXPECT_EQ(tok->Decode({1, 403, 2}), "Once");
}

TEST(TokenizerTest, StreamDecoderHoldsBackPartialCharacters) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto tok = LoadShared(dir);
  ASSERT_NE(tok, nullptr);
  StreamDecoder s(*tok);
  EXPECT_EQ(s.Append(1), "");      // BOS is skipped
  EXPECT_EQ(s.Append(403), "Once");  // leading space of the first piece dropped
  EXPECT_EQ(s.Append(407), " upon");
  EXPECT_EQ(s.Append(3 + 0xE7), "");
  EXPECT_EQ(s.Append(3 + 0x8C), "");
  EXPECT_EQ(s.Append(3 + 0xAB), "\xE7\x8C\xAB");
  EXPECT_EQ(s.Append(3 + 0xE7), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");  // an unfinished character becomes U+FFFD
  // A stray continuation byte can never complete: it is replaced at once.
  EXPECT_EQ(s.Append(3 + 0x8C), "\xEF\xBF\xBD");
  EXPECT_EQ(s.Append(-5), "");
}

TEST(TokenizerTest, ScoreBasedSpmFromVocab) {
  // No merges: pieces merge by score, highest first, as sentencepiece/llama.cpp do.
  VocabData v;
  v.type = VocabType::kSpm;
  v.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "c", "ab", "bc",
              "\xE2\x96\x81" "a", "abc"};
  v.scores = {0, 0, 0, -1, -2, -2, -2, -5, -1, -3, -0.5f};
  v.token_types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  v.token_types.resize(v.tokens.size(), TokenType::kNormal);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  auto tok = Tokenizer::FromVocab(v);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "▁abc": bc (-1) beats ▁a (-3) and ab (-5); then abc (-0.5) beats ▁a; ▁abc is no token.
  EXPECT_EQ((*tok)->Encode("abc", true), (std::vector<int32_t>{1, 3, 10}));
  // "▁ab▁": ▁a (-3) beats ab (-5); ▁a+b is no token.
  EXPECT_EQ((*tok)->Encode("ab ", false), (std::vector<int32_t>{9, 5, 3}));
  // No byte pieces: an unknown character becomes <unk> (consecutive ones fused).
  EXPECT_EQ((*tok)->Encode("xy", false), (std::vector<int32_t>{3, 0}));
}

absl::StatusCode JsonError(const std::string& json, const std::string& must_mention) {
  auto tok = Tokenizer::FromJson(json, "");
  if (tok.ok()) return absl::StatusCode::kOk;
  EXPECT_NE(std::string(tok.status().message()).find(must_mention), std::string::npos)
      << tok.status();
  return tok.status().code();
}

constexpr char kSpmHead[] =
    R"({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
       {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
       "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},)";

TEST(TokenizerTest, BadTokenizerJsonIsInvalidArgument) {
  REQUIRE_SHARED(path, "models/stories260K/tokenizer.json");
  const std::string good = testing::ReadFileOrDie(path);
  ASSERT_TRUE(Tokenizer::FromJson(good, "").ok());
  for (size_t cut : {size_t{0}, size_t{1}, good.size() / 3, good.size() / 2, good.size() - 2}) {
    EXPECT_EQ(JsonError(good.substr(0, cut), "JSON"), absl::StatusCode::kInvalidArgument) << cut;
  }
  const std::string head = kSpmHead;
  EXPECT_EQ(JsonError(head + R"("model": {"type": "WordPiece", "vocab": {"a": 0}}})", "WordPiece"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1},
                                "merges": ["a c"]}})", "'c'"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1},
                                "merges": ["a b"]}})", "'ab'"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 7}}})", "id 7"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": -1}}})", "-1"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}})", "id 0"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": "x"}}})", "'a'"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": [3]}})",
                      "merges[0]"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0}},
                                "added_tokens": [{"id": "zero"}]})", "tokenizer.json"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(head + R"("model": {"type": "BPE", "vocab": {"a": 0}, "unk_token": "?"}})",
                      "unk_token"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(R"([1, 2])", "object"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}},
                          "model": {"vocab": {}}})", "\\w+"),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonError(R"({"normalizer": {"type": "Lowercase"}, "model": {}})", "Lowercase"),
            absl::StatusCode::kInvalidArgument);
  // A config naming a BOS that is not in the vocabulary.
  auto tok = Tokenizer::FromJson(good, R"({"bos_token": {"content": "<bos>"}})");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJson(good, "{").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromDirectory("/nonexistent").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, ConfigChatTemplateAndFlags) {
  REQUIRE_SHARED(path, "models/stories260K/tokenizer.json");
  const std::string json = testing::ReadFileOrDie(path);
  auto tok = Tokenizer::FromJson(
      json, R"({"add_bos_token": false, "add_eos_token": true, "eos_token": "</s>",
                "chat_template": [{"name": "tool_use", "template": "T"},
                                  {"name": "default", "template": "D"}]})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->chat_template(), "D");
  const std::vector<int32_t> ids = (*tok)->Encode("Once", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{403, 2}));
}

TEST(TokenizerTest, BadVocabDataIsInvalidArgument) {
  VocabData v;
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kInvalidArgument);
  v.tokens = {"a", "b"};
  v.bos_id = 5;
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kInvalidArgument);
  v.bos_id = -1;
  v.scores = {1.0f};
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kInvalidArgument);
  v.scores.clear();
  v.type = VocabType::kByteLevel;
  v.pre = "no-such-pre";
  v.merges = {"a b"};
  auto st = Tokenizer::FromVocab(v).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("no-such-pre"), std::string::npos);
}

}  // namespace
}  // namespace compressd
