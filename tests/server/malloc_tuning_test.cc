// server/malloc_tuning.h: the operator's environment wins over the serving defaults.
#include "server/malloc_tuning.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace compressd::server {
namespace {

std::string ConfiguredBy(const std::map<std::string, std::string>& env) {
  return MallocConfiguredBy([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(MallocTuning, EnvironmentOverridesTheServingDefaults) {
  EXPECT_EQ(ConfiguredBy({}), "");
  EXPECT_EQ(ConfiguredBy({{"PATH", "/bin"}}), "");
  EXPECT_EQ(ConfiguredBy({{"MALLOC_ARENA_MAX", "4"}}), "MALLOC_ARENA_MAX");
  EXPECT_EQ(ConfiguredBy({{"MALLOC_TRIM_THRESHOLD_", "0"}}), "MALLOC_TRIM_THRESHOLD_");
  EXPECT_EQ(ConfiguredBy({{"MALLOC_MMAP_THRESHOLD_", "65536"}}), "MALLOC_MMAP_THRESHOLD_");
  EXPECT_EQ(ConfiguredBy({{"GLIBC_TUNABLES", "glibc.malloc.arena_max=1"}}), "GLIBC_TUNABLES");
  // Tunables of other glibc parts leave malloc to us.
  EXPECT_EQ(ConfiguredBy({{"GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F"}}), "");
}

// Sanitizers replace malloc: ASan's mallopt refuses (TSan's accepts), and
// TuneMallocForServing must say which happened.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerMalloc = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kSanitizerMalloc = true;
#else
constexpr bool kSanitizerMalloc = false;
#endif
#else
constexpr bool kSanitizerMalloc = false;
#endif

TEST(MallocTuning, ReportsWhatItDid) {
  // The test binary's own environment decides which line comes back; each names what happened.
  const std::string line = TuneMallocForServing();
  EXPECT_EQ(line.rfind("malloc: ", 0), 0u) << line;
  const bool configured = !MallocConfiguredBy([](const char* n) { return std::getenv(n); }).empty();
  if (configured) {
    EXPECT_NE(line.find("left as configured by"), std::string::npos) << line;
  } else if (kSanitizerMalloc) {
    EXPECT_TRUE(line.find("refused") != std::string::npos ||
                line.find("2 arenas, mmap and trim thresholds 256 KiB") != std::string::npos)
        << line;
  } else {
#if defined(__GLIBC__)
    EXPECT_NE(line.find("2 arenas, mmap and trim thresholds 256 KiB"), std::string::npos) << line;
#endif
  }
}

}  // namespace
}  // namespace compressd::server
