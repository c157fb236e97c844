// The one size syntax of every byte-count option and recipe field: `serve` flags, the other
// subcommands' flags, and a compression recipe's "budget" / --weights budget:<N>.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace compressd {

// A non-negative number with an optional unit, Kubernetes' convention (deploy/ passes these
// straight through): k, M, G, T and kB, MB, GB, TB are powers of 1000; Ki, Mi, Gi, Ti and
// KiB, MiB, GiB, TiB powers of 1024; "B" or nothing is bytes. Case-insensitive, surrounding
// spaces ignored: "600MB", "1.5GiB", "96Ki", " 1 TB ". INVALID_ARGUMENT naming the text
// otherwise (no exponent forms, nothing above 9e18).
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

}  // namespace compressd
