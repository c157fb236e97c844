// The real server on a loopback port with a real engine (stories260K), driven by the real
// C++ gRPC client. After every hostile request the server must still serve.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace compressd::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "models/stories260K";
constexpr char kPrompt[] = "Once upon a time";

// Runs a command and returns its stdout (stderr discarded), or "" when it fails.
std::string RunCommand(const std::string& cmd, int* exit_code) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *exit_code = ::pclose(p);
  return out;
}

void ExpectStillServing(LiveServer& live) {
  const StreamResult r = RunGenerate(live.stub.get(), Greedy(kPrompt, 4));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_NE(r.final_message(), nullptr);
  EXPECT_EQ(r.final_message()->usage().completion_tokens(), r.token_ids.size());
}

TEST(ServerTest, GreedyStreamIsDeterministicAndMatchesGenerateCommand) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  const StreamResult a = RunGenerate(live->stub.get(), Greedy(kPrompt, 20));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  const v1::GenerateResponse* fin = a.final_message();
  ASSERT_NE(fin, nullptr);
  EXPECT_TRUE(fin->finish_reason() == v1::FINISH_REASON_LENGTH ||
              fin->finish_reason() == v1::FINISH_REASON_STOP);
  EXPECT_EQ(fin->usage().completion_tokens(), a.token_ids.size());
  EXPECT_GT(fin->usage().prompt_tokens(), 0u);
  EXPECT_LE(a.token_ids.size(), 20u);
  EXPECT_FALSE(a.text.empty());
  EXPECT_FALSE(fin->request_id().empty());
  for (const auto& m : a.messages) EXPECT_EQ(m.request_id(), fin->request_id());

  const StreamResult b = RunGenerate(live->stub.get(), Greedy(kPrompt, 20));
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.token_ids, b.token_ids);

  const std::string bin = compressd::testing::BinaryDir() + "/server/compressd";
  if (::access(bin.c_str(), X_OK) != 0) GTEST_SKIP() << bin << " not built";
  int rc = -1;
  std::string out = RunCommand(bin + " generate --model " + model +
                                   " --temperature 0 --max-tokens 20 --prompt '" + kPrompt + "'",
                               &rc);
  ASSERT_EQ(rc, 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  std::string text = a.text;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  EXPECT_EQ(out, text);
}

TEST(ServerTest, TokenizeDetokenizeRoundTripAndModelInfo) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  grpc::ClientContext c1;
  v1::TokenizeRequest treq;
  treq.set_text("The little dog ran home.");
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(live->stub->Tokenize(&c1, treq, &tresp).ok());
  ASSERT_GT(tresp.token_ids_size(), 1);
  EXPECT_EQ(tresp.tokens_size(), tresp.token_ids_size());

  grpc::ClientContext c2;
  v1::DetokenizeRequest dreq;
  dreq.mutable_token_ids()->CopyFrom(tresp.token_ids());
  dreq.set_skip_special_tokens(true);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(live->stub->Detokenize(&c2, dreq, &dresp).ok());
  EXPECT_THAT(dresp.text(), HasSubstr("The little dog ran home."));

  grpc::ClientContext c3;
  v1::DetokenizeRequest bad;
  bad.add_token_ids(1u << 30);
  const grpc::Status st = live->stub->Detokenize(&c3, bad, &dresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("token_ids[0]"));

  grpc::ClientContext c4;
  v1::TokenizeRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  v1::TokenizeResponse cresp;
  const grpc::Status cst = live->stub->Tokenize(&c4, chat, &cresp);
  EXPECT_TRUE(cst.ok() || cst.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
      << cst.error_message();

  grpc::ClientContext c5;
  v1::ModelInfo info;
  ASSERT_TRUE(live->stub->GetModelInfo(&c5, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.vocab_size(), 512u);
  EXPECT_EQ(info.context_length(), live->server->engine().Summary().context_length);
  EXPECT_GT(info.parameters(), 0u);
  EXPECT_GT(info.weight_bits_per_param(), 0.0);
  EXPECT_FALSE(info.architecture().empty());
  EXPECT_FALSE(info.backend().empty());
}

TEST(ServerTest, LogprobsAreReturnedPerToken) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  v1::GenerateRequest req = Greedy(kPrompt, 6);
  req.set_include_logprobs(true);
  req.set_top_logprobs(3);
  const StreamResult r = RunGenerate(live->stub.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  size_t n = 0;
  for (const auto& m : r.messages) {
    ASSERT_EQ(m.logprobs_size(), m.token_ids_size());
    for (int i = 0; i < m.logprobs_size(); ++i) {
      EXPECT_EQ(m.logprobs(i).chosen().token_id(), m.token_ids(i));
      EXPECT_LE(m.logprobs(i).chosen().logprob(), 0.0f);
      EXPECT_EQ(m.logprobs(i).top_size(), 3);
      ++n;
    }
  }
  EXPECT_EQ(n, r.token_ids.size());
}

TEST(ServerTest, HealthServingThenNotServingOnDrain) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  EXPECT_EQ(HealthCheck(live->channel.get(), ""), 1);
  EXPECT_EQ(HealthCheck(live->channel.get(), kServiceName), 1);

  live->server->BeginDrain();
  EXPECT_EQ(HealthCheck(live->channel.get(), ""), 2);
  EXPECT_EQ(HealthCheck(live->channel.get(), kServiceName), 2);
  const StreamResult r = RunGenerate(live->stub.get(), Greedy(kPrompt, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();

  // Unary calls keep working while draining.
  grpc::ClientContext c;
  v1::ModelInfo info;
  EXPECT_TRUE(live->stub->GetModelInfo(&c, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_TRUE(live->server->WaitIdle(absl::Seconds(10)));
  live->server->Shutdown();
}

TEST(ServerTest, DrainLetsRunningRequestsFinish) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  v1::GenerateRequest req = Greedy(kPrompt, 64);
  req.set_ignore_eos(true);
  StreamResult running;
  std::thread t([&] { running = RunGenerate(live->stub.get(), req); });
  // Wait until the request is in the engine, then drain.
  for (int i = 0; i < 500 && live->server->service().active_streams() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  live->server->BeginDrain();
  EXPECT_TRUE(live->server->WaitIdle(absl::Seconds(30)));
  t.join();
  ASSERT_TRUE(running.status.ok()) << running.status.error_message();
  ASSERT_NE(running.final_message(), nullptr);
  EXPECT_EQ(running.token_ids.size(), 64u);
  live->server->Shutdown();
}

TEST(ServerTest, ClientCancelMidStreamFreesTheRequest) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  v1::GenerateRequest req = Greedy(kPrompt, 0);  // up to the context length
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = live->stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
  for (int i = 0; i < 200 && live->server->service().active_streams() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(live->server->service().active_streams(), 0);
  ExpectStillServing(*live);
}

TEST(ServerTest, OneMillisecondDeadline) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  ExpectStillServing(*live);  // connection up, so the deadline is spent on the call
  for (int i = 0; i < 5; ++i) {
    v1::GenerateRequest req = Greedy(kPrompt, 0);
    req.set_ignore_eos(true);
    const StreamResult r = RunGenerate(live->stub.get(), req, std::chrono::milliseconds(1));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << r.status.error_message();
  }
  EXPECT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
  ExpectStillServing(*live);
}

TEST(ServerTest, HostileInputsAreRejectedAndServingContinues) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  const int ctx_len = live->server->engine().Summary().context_length;
  struct Case {
    const char* name;
    std::function<void(v1::GenerateRequest&)> mutate;
    const char* fragment;
  };
  const Case cases[] = {
      {"empty", [](v1::GenerateRequest& r) { r.clear_input(); }, "prompt is empty"},
      {"huge max_tokens", [](v1::GenerateRequest& r) { r.set_max_tokens(4000000000u); },
       "max_tokens"},
      {"prompt+max_tokens", [&](v1::GenerateRequest& r) { r.set_max_tokens(ctx_len); },
       "context length"},
      {"token id", [](v1::GenerateRequest& r) { r.mutable_prompt_tokens()->add_ids(512); },
       "prompt_tokens.ids[0] is 512"},
      {"flat token id",
       [](v1::GenerateRequest& r) {
         r.clear_input();
         r.add_prompt_token_ids(1);
         r.add_prompt_token_ids(99999);
       },
       "prompt_token_ids[1]"},
      {"long prompt",
       [&](v1::GenerateRequest& r) {
         r.clear_input();
         r.set_max_tokens(0);
         for (int i = 0; i < ctx_len + 10; ++i) r.add_prompt_token_ids(5);
       },
       "prompt has"},
      // Refused by its byte count before tokenizing (it used to be tokenized in full, 5-15 s
      // of CPU, then refused for its token count).
      {"10 MB prompt", [](v1::GenerateRequest& r) { r.set_prompt(std::string(10 << 20, 'a')); },
       "prompt has 10485760 bytes; at most"},
      {"nan temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
       "sampling.temperature is NaN"},
      {"inf top_p",
       [](v1::GenerateRequest& r) {
         r.mutable_sampling()->set_top_p(std::numeric_limits<float>::infinity());
       },
       "sampling.top_p"},
      {"top_k", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(100000); },
       "sampling.top_k"},
      {"stop count",
       [](v1::GenerateRequest& r) {
         for (int i = 0; i < 100; ++i) r.add_stop("s");
       },
       "stop has"},
      {"stop size", [](v1::GenerateRequest& r) { r.add_stop(std::string(10000, 'x')); },
       "stop[0]"},
      {"stop token", [](v1::GenerateRequest& r) { r.add_stop_token_ids(700); },
       "stop_token_ids[0]"},
      {"top_logprobs",
       [](v1::GenerateRequest& r) {
         r.set_include_logprobs(true);
         r.set_top_logprobs(50);
       },
       "top_logprobs"},
      {"priority", [](v1::GenerateRequest& r) { r.set_priority(1000); }, "priority"},
      {"request id", [](v1::GenerateRequest& r) { r.set_request_id(std::string(500, 'r')); },
       "request_id"},
      {"chat role",
       [](v1::GenerateRequest& r) {
         auto* m = r.mutable_chat()->add_messages();
         m->set_role("wizard");
         m->set_content("hi");
       },
       "chat.messages[0].role"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::GenerateRequest req = Greedy(kPrompt, 8);
    c.mutate(req);
    const StreamResult r = RunGenerate(live->stub.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.fragment));
    EXPECT_TRUE(r.messages.empty());
    ExpectStillServing(*live);
  }
  EXPECT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
}

TEST(ServerTest, DuplicateInFlightRequestIdIsRejected) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  v1::GenerateRequest req = Greedy(kPrompt, 0);
  req.set_ignore_eos(true);
  req.set_request_id("same-id");
  grpc::ClientContext ctx;
  auto reader = live->stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.request_id(), "same-id");
  const StreamResult dup = RunGenerate(live->stub.get(), req);
  EXPECT_EQ(dup.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
  EXPECT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
  // Released after the final event: the id can be used again.
  for (int i = 0; i < 200 && live->server->service().active_streams() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  req.set_max_tokens(2);
  req.set_ignore_eos(false);
  EXPECT_TRUE(RunGenerate(live->stub.get(), req).status.ok());
}

TEST(ServerTest, TwoHundredConcurrentStreamsAllComplete) {
  REQUIRE_SHARED(model, kModel);
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  constexpr int kStreams = 200;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  threads.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(kPrompt, 4);
      if (i % 2 == 1) {
        req.mutable_sampling()->set_temperature(0.8f);
        req.mutable_sampling()->set_seed(static_cast<uint64_t>(i));
      }
      results[i] = RunGenerate(live->stub.get(), req, std::chrono::seconds(120));
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (const StreamResult& r : results) {
    if (r.status.ok() && r.final_message() != nullptr &&
        r.final_message()->usage().completion_tokens() == r.token_ids.size()) {
      ++ok;
    } else {
      ADD_FAILURE() << r.status.error_code() << " " << r.status.error_message();
    }
  }
  EXPECT_EQ(ok, kStreams);
  EXPECT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
  ExpectStillServing(*live);
}

// --max-concurrent-streams bounds the calls one connection has open in the server: with a
// bound of 4, 32 concurrent Generate calls on one channel never have more than 4 streams in
// the server at once (the rest wait in the client), every call still completes with a final
// message, and a second connection is served meanwhile. Without the bound the engine holds
// all 32 at once (64 tokens each, ignore_eos), so the peak check fails.
TEST(ServerTest, MaxConcurrentStreamsBoundsOpenCallsPerConnection) {
  REQUIRE_SHARED(model, kModel);
  constexpr int kBound = 4;
  constexpr int kCalls = 32;
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.metrics_port = 0;
  o.engine.model = model;
  o.engine.threads = 1;
  o.max_concurrent_streams = kBound;
  auto created = Server::Create(o);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Server> server = std::move(*created);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  // One finished call first: the server's SETTINGS (with the bound) have reached the client.
  ASSERT_TRUE(RunGenerate(stub.get(), Greedy(kPrompt, 2)).status.ok());

  std::atomic<bool> done{false};
  std::atomic<int64_t> peak{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const int64_t n = server->service().active_streams();
      if (n > peak.load()) peak.store(n);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  std::vector<StreamResult> results(kCalls);
  std::vector<std::thread> threads;
  threads.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(kPrompt, 64);
      req.set_ignore_eos(true);
      results[i] = RunGenerate(stub.get(), req, std::chrono::seconds(120));
    });
  }
  // A second connection is not limited by the first one's streams.
  auto other = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto other_stub = v1::Generation::NewStub(other);
  const StreamResult side = RunGenerate(other_stub.get(), Greedy(kPrompt, 2));
  for (auto& t : threads) t.join();
  done = true;
  sampler.join();

  EXPECT_TRUE(side.status.ok()) << side.status.error_message();
  int ok = 0;
  for (const StreamResult& r : results) {
    if (r.status.ok() && r.final_message() != nullptr &&
        r.final_message()->usage().completion_tokens() == 64) {
      ++ok;
    } else {
      ADD_FAILURE() << r.status.error_code() << " " << r.status.error_message();
    }
  }
  EXPECT_EQ(ok, kCalls);
  // The side call on the second connection may add one stream to the server-wide count.
  EXPECT_LE(peak.load(), kBound + 1) << "streams open in the server at once";
  EXPECT_GE(peak.load(), 2) << "the calls never overlapped; the test proves nothing";
  std::printf("MAX_STREAMS bound=%d calls=%d peak_open=%lld\n", kBound, kCalls,
              static_cast<long long>(peak.load()));
  EXPECT_EQ(server->service().active_streams(), 0);
  const StreamResult after = RunGenerate(stub.get(), Greedy(kPrompt, 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST(ServerTest, MetricsCountRequests) {
  REQUIRE_SHARED(model, kModel);
  const int metrics_port = FreePort();
  auto live = LiveServer::Start(model, metrics_port);
  ASSERT_NE(live, nullptr);
  EXPECT_EQ(live->server->metrics_port(), metrics_port);
  for (int i = 0; i < 2; ++i) {
    v1::GenerateRequest req = Greedy(kPrompt, 4);
    req.set_ignore_eos(true);
    ASSERT_TRUE(RunGenerate(live->stub.get(), req).status.ok());
  }
  // The engine may count a request as running until the step after its final event.
  ASSERT_TRUE(live->EngineIdleWithin(std::chrono::seconds(5)));
  const std::string body = HttpGet(metrics_port, "/metrics");
  EXPECT_THAT(body, HasSubstr("compressd_requests_total{finish_reason=\"length\"} 2"));
  EXPECT_THAT(body, HasSubstr("compressd_time_to_first_token_seconds_count 2"));
  EXPECT_THAT(body, HasSubstr("compressd_e2e_request_latency_seconds_count 2"));
  EXPECT_THAT(body, HasSubstr("compressd_generation_tokens_total"));
  EXPECT_THAT(body, HasSubstr("compressd_requests_running 0"));
}

}  // namespace
}  // namespace compressd::server::testing
