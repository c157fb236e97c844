// Pure tests of request validation, the status map and ToValidUtf8: no engine, no network.
#include "server/validation.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/generation_service.h"
#include "server/status_map.h"
#include "tests/server/server_test_util.h"

namespace compressd::server {
namespace {

using ::testing::HasSubstr;

const ModelLimits kLimits{/*vocab_size=*/512, /*context_length=*/256};

v1::GenerateRequest Valid() {
  v1::GenerateRequest r;
  r.set_prompt("Once upon a time");
  r.set_max_tokens(16);
  return r;
}

// Expects INVALID_ARGUMENT whose message contains every fragment.
void ExpectInvalid(const v1::GenerateRequest& r, std::initializer_list<const char*> fragments) {
  const absl::Status st = ValidateGenerateRequest(r, kLimits);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  for (const char* f : fragments) EXPECT_THAT(std::string(st.message()), HasSubstr(f));
}

TEST(ValidateGenerateRequest, AcceptsMinimalAndFullRequests) {
  EXPECT_TRUE(ValidateGenerateRequest(Valid(), kLimits).ok());

  v1::GenerateRequest r = Valid();
  r.set_max_tokens(0);
  auto* s = r.mutable_sampling();
  s->set_temperature(100);
  s->set_top_k(512);
  s->set_top_p(1);
  s->set_min_p(1);
  s->set_repetition_penalty(10);
  s->set_presence_penalty(-2);
  s->set_frequency_penalty(2);
  s->set_seed(7);
  for (int i = 0; i < kMaxStopStrings; ++i) r.add_stop(std::string(kMaxStopStringBytes, 'x'));
  for (int i = 0; i < kMaxStopTokenIds; ++i) r.add_stop_token_ids(511);
  r.set_include_logprobs(true);
  r.set_top_logprobs(20);
  r.set_priority(-100);
  r.set_request_id(std::string(kMaxRequestIdBytes, 'a'));
  EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok()) << ValidateGenerateRequest(r, kLimits);

  r.set_priority(100);
  r.set_max_tokens(256);
  EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok());
}

TEST(ValidateGenerateRequest, InputPresence) {
  v1::GenerateRequest r;
  ExpectInvalid(r, {"prompt is empty"});
  r.set_prompt("");
  ExpectInvalid(r, {"prompt is empty"});
  r.mutable_prompt_tokens();
  ExpectInvalid(r, {"prompt_tokens.ids is empty"});
  r.mutable_chat();
  ExpectInvalid(r, {"chat.messages is empty"});

  v1::GenerateRequest flat;
  flat.add_prompt_token_ids(1);
  EXPECT_TRUE(ValidateGenerateRequest(flat, kLimits).ok());
  flat.set_prompt("x");
  ExpectInvalid(flat, {"prompt_token_ids", "only one"});
}

TEST(ValidateGenerateRequest, TokenIdsMustBeInVocab) {
  v1::GenerateRequest r;
  r.mutable_prompt_tokens()->add_ids(1);
  r.mutable_prompt_tokens()->add_ids(511);
  EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok());
  r.mutable_prompt_tokens()->add_ids(512);
  ExpectInvalid(r, {"prompt_tokens.ids[2]", "512", "[0, 512)"});

  v1::GenerateRequest flat;
  flat.add_prompt_token_ids(std::numeric_limits<uint32_t>::max());
  ExpectInvalid(flat, {"prompt_token_ids[0]", "4294967295"});

  v1::GenerateRequest stop = Valid();
  stop.add_stop_token_ids(2);
  stop.add_stop_token_ids(100000);
  ExpectInvalid(stop, {"stop_token_ids[1]", "100000"});
}

TEST(ValidateGenerateRequest, MaxTokensBeyondContext) {
  v1::GenerateRequest r = Valid();
  r.set_max_tokens(257);
  ExpectInvalid(r, {"max_tokens is 257", "[0, 256]"});
  r.set_max_tokens(std::numeric_limits<uint32_t>::max());
  ExpectInvalid(r, {"max_tokens is 4294967295"});
}

struct FloatCase {
  const char* field;
  void (*set)(v1::SamplingParams*, float);
  float lo;
  float hi;
};

TEST(ValidateGenerateRequest, SamplingRangesNanAndInf) {
  const FloatCase cases[] = {
      {"sampling.temperature", [](v1::SamplingParams* s, float v) { s->set_temperature(v); }, 0,
       100},
      {"sampling.top_p", [](v1::SamplingParams* s, float v) { s->set_top_p(v); }, 0, 1},
      {"sampling.min_p", [](v1::SamplingParams* s, float v) { s->set_min_p(v); }, 0, 1},
      {"sampling.repetition_penalty",
       [](v1::SamplingParams* s, float v) { s->set_repetition_penalty(v); }, 0, 10},
      {"sampling.presence_penalty",
       [](v1::SamplingParams* s, float v) { s->set_presence_penalty(v); }, -2, 2},
      {"sampling.frequency_penalty",
       [](v1::SamplingParams* s, float v) { s->set_frequency_penalty(v); }, -2, 2},
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (const FloatCase& c : cases) {
    SCOPED_TRACE(c.field);
    for (float ok : {c.lo, c.hi, (c.lo + c.hi) / 2}) {
      v1::GenerateRequest r = Valid();
      c.set(r.mutable_sampling(), ok);
      EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok()) << ok;
    }
    for (float bad : {c.lo - 0.01f, c.hi + 0.01f, std::nanf(""), inf, -inf}) {
      v1::GenerateRequest r = Valid();
      c.set(r.mutable_sampling(), bad);
      ExpectInvalid(r, {c.field, "allowed"});
    }
  }
  v1::GenerateRequest r = Valid();
  r.mutable_sampling()->set_temperature(std::nanf(""));
  ExpectInvalid(r, {"sampling.temperature is NaN"});
  r.mutable_sampling()->set_temperature(inf);
  ExpectInvalid(r, {"sampling.temperature is +inf"});
  r = Valid();
  r.mutable_sampling()->set_top_k(513);
  ExpectInvalid(r, {"sampling.top_k is 513", "[0, 512]"});
}

TEST(ValidateGenerateRequest, StopStrings) {
  v1::GenerateRequest r = Valid();
  for (int i = 0; i <= kMaxStopStrings; ++i) r.add_stop("x");
  ExpectInvalid(r, {"stop has 17 strings", "at most 16"});
  r = Valid();
  r.add_stop("");
  ExpectInvalid(r, {"stop[0] is empty"});
  r = Valid();
  r.add_stop("ok");
  r.add_stop(std::string(kMaxStopStringBytes + 1, 'y'));
  ExpectInvalid(r, {"stop[1] has 257 bytes"});
  r = Valid();
  for (int i = 0; i <= kMaxStopTokenIds; ++i) r.add_stop_token_ids(1);
  ExpectInvalid(r, {"stop_token_ids has 65 ids"});
}

TEST(ValidateGenerateRequest, LogprobsPriorityRequestId) {
  v1::GenerateRequest r = Valid();
  r.set_include_logprobs(true);
  r.set_top_logprobs(21);
  ExpectInvalid(r, {"top_logprobs is 21", "[0, 20]"});
  r.set_include_logprobs(false);
  r.set_top_logprobs(3);
  ExpectInvalid(r, {"include_logprobs"});

  r = Valid();
  r.set_priority(101);
  ExpectInvalid(r, {"priority is 101", "[-100, 100]"});
  r.set_priority(-101);
  ExpectInvalid(r, {"priority is -101"});

  r = Valid();
  r.set_request_id(std::string(kMaxRequestIdBytes + 1, 'a'));
  ExpectInvalid(r, {"request_id has 129 bytes", "at most 128"});
  r.set_request_id("abc\ndef");
  ExpectInvalid(r, {"request_id byte 3", "0x0a"});
  r.set_request_id("caf\xc3\xa9");
  ExpectInvalid(r, {"request_id byte 3"});
}

TEST(ValidateGenerateRequest, ChatRolesAndCount) {
  v1::GenerateRequest r;
  auto* chat = r.mutable_chat();
  for (const char* role : {"system", "user", "assistant", "tool"}) {
    auto* m = chat->add_messages();
    m->set_role(role);
    m->set_content("hi");
  }
  EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok());
  chat->add_messages()->set_role("User");
  ExpectInvalid(r, {"chat.messages[4].role is 'User'", "\"assistant\""});
  chat->mutable_messages(4)->set_role("");
  ExpectInvalid(r, {"chat.messages[4].role is ''"});

  v1::GenerateRequest many;
  for (int i = 0; i <= kMaxChatMessages; ++i) many.mutable_chat()->add_messages()->set_role("user");
  ExpectInvalid(many, {"chat.messages has 1025 messages"});
}

// Regression (#8): a 10 MB prompt used to be tokenized in full (seconds of CPU) before its
// token count was refused. The byte bound, 32 bytes per context position (8,192 bytes for
// a context of 256), is checked here, before any tokenizer runs.
TEST(ValidateGenerateRequest, PromptBytesBoundedBeforeTokenizing) {
  v1::GenerateRequest r = Valid();
  r.set_prompt(std::string(8192, 'a'));
  EXPECT_TRUE(ValidateGenerateRequest(r, kLimits).ok()) << ValidateGenerateRequest(r, kLimits);
  r.set_prompt(std::string(8193, 'a'));
  ExpectInvalid(r, {"prompt has 8193 bytes; at most 8192 allowed", "context length 256",
                    "before tokenizing"});
  r.set_prompt(std::string(10 << 20, 'a'));
  ExpectInvalid(r, {"prompt has 10485760 bytes; at most 8192 allowed"});

  // Chat: the contents of all messages count together.
  v1::GenerateRequest chat;
  for (int i = 0; i < 2; ++i) {
    auto* m = chat.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(std::string(4096, 'b'));
  }
  EXPECT_TRUE(ValidateGenerateRequest(chat, kLimits).ok());
  chat.mutable_chat()->mutable_messages(1)->mutable_content()->push_back('b');
  ExpectInvalid(chat, {"chat.messages[*].content together has 8193 bytes; at most 8192"});

  // The bound scales with the model's context.
  r.set_prompt(std::string(8193, 'a'));
  EXPECT_TRUE(ValidateGenerateRequest(r, ModelLimits{512, 512}).ok());
}
TEST(ValidatePromptLength, Bounds) {
  EXPECT_TRUE(ValidatePromptLength(10, 0, 256).ok());
  EXPECT_TRUE(ValidatePromptLength(10, 246, 256).ok());
  EXPECT_TRUE(ValidatePromptLength(255, 1, 256).ok());

  absl::Status st = ValidatePromptLength(0, 1, 256);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("prompt is empty"));

  st = ValidatePromptLength(300, 0, 256);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "prompt has 300 tokens; the context length is 256");
  st = ValidatePromptLength(256, 0, 256);
  EXPECT_EQ(st.message(), "prompt has 256 tokens; the context length is 256");

  st = ValidatePromptLength(10, 247, 256);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("prompt has 10 tokens and max_tokens is 247"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("[0, 246]"));
}

TEST(ValidateTokenize, InputsAndIds) {
  v1::TokenizeRequest t;
  EXPECT_EQ(ValidateTokenizeRequest(t).code(), absl::StatusCode::kInvalidArgument);
  t.set_text("");
  EXPECT_TRUE(ValidateTokenizeRequest(t).ok());
  t.mutable_chat()->add_messages()->set_role("robot");
  EXPECT_THAT(std::string(ValidateTokenizeRequest(t).message()), HasSubstr("robot"));

  v1::DetokenizeRequest d;
  EXPECT_TRUE(ValidateDetokenizeRequest(d, kLimits).ok());
  d.add_token_ids(511);
  EXPECT_TRUE(ValidateDetokenizeRequest(d, kLimits).ok());
  d.add_token_ids(512);
  EXPECT_THAT(std::string(ValidateDetokenizeRequest(d, kLimits).message()),
              HasSubstr("token_ids[1] is 512"));
}

TEST(ToEngineSampling, ZeroMeansDisabled) {
  v1::SamplingParams p;
  SamplingParams s = ToEngineSampling(p);
  EXPECT_EQ(s.temperature, 0.0f);  // proto 0 = greedy
  EXPECT_EQ(s.top_p, 1.0f);
  EXPECT_EQ(s.repetition_penalty, 1.0f);
  EXPECT_FALSE(s.seed.has_value());
  p.set_top_p(0.5f);
  p.set_top_k(40);
  p.set_seed(0);
  p.set_repetition_penalty(1.3f);
  s = ToEngineSampling(p);
  EXPECT_EQ(s.top_p, 0.5f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_EQ(s.repetition_penalty, 1.3f);
  ASSERT_TRUE(s.seed.has_value());
  EXPECT_EQ(*s.seed, 0u);
}

TEST(ExplicitPromptTokens, PicksTheIdInput) {
  v1::GenerateRequest r;
  r.add_prompt_token_ids(3);
  r.add_prompt_token_ids(4);
  EXPECT_EQ(ExplicitPromptTokens(r), (std::vector<int32_t>{3, 4}));
  v1::GenerateRequest t;
  t.mutable_prompt_tokens()->add_ids(9);
  EXPECT_EQ(ExplicitPromptTokens(t), (std::vector<int32_t>{9}));
  EXPECT_TRUE(ExplicitPromptTokens(Valid()).empty());
}

TEST(StatusMap, EveryCodeKeepsCodeAndMessage) {
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    const absl::Status st(code, c == 0 ? "" : "why");
    const grpc::Status g = ToGrpcStatus(st);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    if (c != 0) {
      EXPECT_EQ(g.error_message(), "why");
    }
  }
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("draining")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("queue")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(ToValidUtf8, ReplacesBadSequences) {
  EXPECT_EQ(ToValidUtf8("plain"), "plain");
  EXPECT_EQ(ToValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(ToValidUtf8("ab\xe2\x82"), "ab\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated
  EXPECT_EQ(ToValidUtf8("\xff"), "\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("\xc0\xaf"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(ToValidUtf8("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(ValidateGenerateRequest, KvCacheTakesOnlyTheServersCodecOrItsLadderStep) {
  ModelLimits limits = kLimits;
  limits.kv_cache_codecs = {"int8", "int4"};
  v1::GenerateRequest r = Valid();
  EXPECT_TRUE(ValidateGenerateRequest(r, limits).ok());  // "" = the server's codec
  for (const char* ok : {"int8", "int4"}) {
    r.set_kv_cache(ok);
    EXPECT_TRUE(ValidateGenerateRequest(r, limits).ok()) << ok;
  }
  for (const char* bad : {"int2", "fp16", "bf16", "bogus", " int4", "INT4"}) {
    r.set_kv_cache(bad);
    const absl::Status st = ValidateGenerateRequest(r, limits);
    ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(st.message()),
                HasSubstr("allowed on this server: \"\" (the server's codec, int8), \"int8\", "
                          "\"int4\""))
        << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(std::string("kv_cache is '") + bad));
    EXPECT_EQ(ToGrpcStatus(st).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // No request codecs known (a codec without a ladder step lists only itself).
  r.set_kv_cache("int4");
  ExpectInvalid(r, {"kv_cache is 'int4'", "allowed on this server: \"\""});
  // Control bytes are escaped in the message; long values are cut.
  r.set_kv_cache(std::string("a\nb") + std::string(100, 'x'));
  const absl::Status st = ValidateGenerateRequest(r, limits);
  EXPECT_THAT(std::string(st.message()), HasSubstr("a\\nb"));
  EXPECT_LT(st.message().size(), 400u);
}

// Through gRPC: a real server with an int8 KV cache on random:tiny.
TEST(ValidateGenerateRequest, KvCacheOverGrpc) {
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.metrics_port = 0;
  o.engine.model = "random:tiny";
  o.engine.threads = 1;
  o.engine.kv_cache = "int8";
  auto server = Server::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);

  v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  }
  EXPECT_EQ(info.kv_codec(), "int8");
  EXPECT_THAT(std::vector<std::string>(info.kv_cache_request_codecs().begin(),
                                       info.kv_cache_request_codecs().end()),
              ::testing::ElementsAre("int8", "int4"));

  v1::GenerateRequest r;
  for (int i = 0; i < 40; ++i) r.add_prompt_token_ids(static_cast<uint32_t>(3 + i * 7 % 500));
  r.set_max_tokens(150);
  r.set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0);
  for (const char* bad : {"int2", "fp16", "nope"}) {
    r.set_kv_cache(bad);
    const testing::StreamResult res = testing::RunGenerate(stub.get(), r);
    EXPECT_EQ(res.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(res.status.error_message(), HasSubstr("kv_cache"));
    EXPECT_THAT(res.status.error_message(), HasSubstr("\"int8\", \"int4\""));
    EXPECT_TRUE(res.messages.empty());
  }
  r.set_kv_cache("");
  const testing::StreamResult base = testing::RunGenerate(stub.get(), r);
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  r.set_kv_cache("int4");
  const testing::StreamResult small = testing::RunGenerate(stub.get(), r);
  ASSERT_TRUE(small.status.ok()) << small.status.error_message();
  ASSERT_NE(base.final_message(), nullptr);
  ASSERT_NE(small.final_message(), nullptr);
  EXPECT_EQ(small.token_ids.size(), 150u);
  EXPECT_LT(small.final_message()->usage().kv_bytes(), base.final_message()->usage().kv_bytes());
  EXPECT_GT((*server)->engine().Stats().kv_demotions_requested_total, 0u);
}

}  // namespace
}  // namespace compressd::server
