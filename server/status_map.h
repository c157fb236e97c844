// The one place where internal absl::Status becomes a gRPC status on the wire.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace compressd::server {

// Same code, same message. Codes share numbering between absl and gRPC; the mapping is
// spelled out so that a divergence would be a compile-visible edit here.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace compressd::server
