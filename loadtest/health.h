// Readiness through the standard gRPC health service (grpc.health.v1.Health/Check), called
// with a generic stub so the client needs no health proto of its own.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace compressd::loadtest {

// One Check call. OK when the server answers SERVING for `service` ("" = the whole server);
// UNAVAILABLE (or the call's status) otherwise.
absl::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         double timeout_s);

// Polls CheckHealth every 200 ms until it is OK or `timeout_s` has passed.
absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& service, double timeout_s);

}  // namespace compressd::loadtest
