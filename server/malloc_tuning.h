// Allocator settings for a long-running server (glibc malloc; a no-op elsewhere).
//
// glibc's defaults suit short programs, not a gRPC server under load: every thread that
// contends for a lock gets its own arena (up to 8 per core), and the mmap threshold grows
// with the largest block freed (up to 32 MiB, the trim threshold to twice that), so memory
// freed after a burst stays in the heap. Under load above capacity the server's RSS then
// ratchets up with each stall and never comes back (docs/RELIABILITY.md, "Soak": +6.6% in
// 120 s with the defaults, +1.2% with these settings, same binary and load).
//
// `compressd serve` calls TuneMallocForServing() once, before any other thread exists.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace compressd::server {

struct MallocSettings {
  int arena_max = 2;                    // M_ARENA_MAX
  size_t mmap_threshold = 256 << 10;    // M_MMAP_THRESHOLD (fixed: no dynamic growth)
  size_t trim_threshold = 256 << 10;    // M_TRIM_THRESHOLD
};

// The environment variable through which the operator already configures glibc malloc
// (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ or
// GLIBC_TUNABLES naming glibc.malloc.*), or "" when none does. `getenv` is injectable for tests.
std::string MallocConfiguredBy(const std::function<const char*(const char*)>& getenv);

// Applies `settings` unless the environment configures malloc (then it is left alone).
// Returns one line for the log saying which happened.
std::string TuneMallocForServing(const MallocSettings& settings = {});

}  // namespace compressd::server
