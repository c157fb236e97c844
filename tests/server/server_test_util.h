// Helpers for the server integration tests: a real engine + server on a loopback port, a
// real gRPC client, health checks through grpc.health.v1, free ports, and HTTP GET.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "compressd/v1/generation.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/util/test_env.h"

namespace compressd::server::testing {

// A port that was free a moment ago (bind to 0, read it back, close).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Plain HTTP/1.0 GET on 127.0.0.1; returns the body, or "" on any failure.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "";
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// grpc.health.v1.Health/Check without generated health stubs: the request is
// {string service = 1}, the response {ServingStatus status = 1} (1 SERVING, 2 NOT_SERVING).
// Returns the status, or -1 with the RPC error.
inline int HealthCheck(grpc::Channel* channel, const std::string& service) {
  grpc::GenericStub stub(channel->shared_from_this());
  std::string wire;
  wire.push_back(0x0a);
  wire.push_back(static_cast<char>(service.size()));  // names here are < 128 bytes
  wire += service;
  grpc::Slice slice(wire);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status st = done.get_future().get();
  if (!st.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.size() == 2 && bytes[0] == 0x08) return bytes[1];
  return bytes.empty() ? 0 : -1;  // UNKNOWN (0) is encoded as no bytes
}

struct StreamResult {
  std::string text;
  std::vector<uint32_t> token_ids;
  std::vector<v1::GenerateResponse> messages;
  grpc::Status status;
  const v1::GenerateResponse* final_message() const {
    return messages.empty() || !messages.back().finished() ? nullptr : &messages.back();
  }
};

inline StreamResult RunGenerate(v1::Generation::Stub* stub, const v1::GenerateRequest& req,
                                std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
  StreamResult out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    out.text += msg.text();
    out.token_ids.insert(out.token_ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    out.messages.push_back(msg);
  }
  out.status = reader->Finish();
  return out;
}

inline v1::GenerateRequest Greedy(const std::string& prompt, uint32_t max_tokens) {
  v1::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

// A loaded model served on 127.0.0.1:<free port>, with a connected stub.
struct LiveServer {
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Generation::Stub> stub;

  static std::unique_ptr<LiveServer> Start(const std::string& model, int metrics_port = 0,
                                           int32_t max_queue = 256) {
    ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.metrics_port = metrics_port;
    o.engine.model = model;
    o.engine.threads = 1;
    o.engine.max_queue = max_queue;
    auto s = Server::Create(o);
    if (!s.ok()) {
      ADD_FAILURE() << "server did not start: " << s.status();
      return nullptr;
    }
    auto live = std::make_unique<LiveServer>();
    live->server = std::move(*s);
    live->channel =
        grpc::CreateChannel(live->server->address(), grpc::InsecureChannelCredentials());
    live->stub = v1::Generation::NewStub(live->channel);
    return live;
  }

  // Running + waiting reach 0 within `timeout`.
  bool EngineIdleWithin(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      const EngineStats s = server->engine().Stats();
      if (s.running == 0 && s.waiting == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

}  // namespace compressd::server::testing
