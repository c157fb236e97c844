#include "loadtest/health.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"

namespace compressd::loadtest {
namespace {

// grpc.health.v1 messages, hand-encoded: HealthCheckRequest {string service = 1;} and
// HealthCheckResponse {ServingStatus status = 1;} with SERVING = 1.
std::string EncodeRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back(0x0a);  // field 1, length-delimited
  size_t n = service.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  return out + service;
}

// The status field, or 0 (UNKNOWN) when absent.
int DecodeStatus(const std::string& bytes) {
  if (bytes.size() >= 2 && bytes[0] == 0x08) return static_cast<unsigned char>(bytes[1]);
  return 0;
}

}  // namespace

absl::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         double timeout_s) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const std::string req_bytes = EncodeRequest(service);
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  int tag = 1;
  call->Finish(&response, &status, &tag);
  void* got = nullptr;
  bool ok = false;
  cq.Next(&got, &ok);
  cq.Shutdown();
  while (cq.Next(&got, &ok)) {
  }
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("health check failed: ", status.error_code(), " ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  const int serving = DecodeStatus(bytes);
  if (serving != 1) {
    return absl::UnavailableError(absl::StrCat("health status ", serving, " (want SERVING)"));
  }
  return absl::OkStatus();
}

absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& service, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  absl::Status last = absl::DeadlineExceededError("not checked");
  while (std::chrono::steady_clock::now() < deadline) {
    last = CheckHealth(channel, service, 2.0);
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("not SERVING after ", timeout_s, " s: ", last.message()));
}

}  // namespace compressd::loadtest
