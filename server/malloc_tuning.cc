#include "server/malloc_tuning.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/strings/str_cat.h"

namespace compressd::server {

std::string MallocConfiguredBy(const std::function<const char*(const char*)>& getenv) {
  for (const char* name : {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_TOP_PAD_"}) {
    if (getenv(name) != nullptr) return name;
  }
  const char* tunables = getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    return "GLIBC_TUNABLES";
  }
  return "";
}

std::string TuneMallocForServing(const MallocSettings& settings) {
#if defined(__GLIBC__)
  const std::string by = MallocConfiguredBy([](const char* n) { return std::getenv(n); });
  if (!by.empty()) return absl::StrCat("malloc: left as configured by ", by);
  const bool ok = mallopt(M_ARENA_MAX, settings.arena_max) == 1 &&
                  mallopt(M_MMAP_THRESHOLD, static_cast<int>(settings.mmap_threshold)) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, static_cast<int>(settings.trim_threshold)) == 1;
  if (!ok) return "malloc: mallopt refused the serving settings; glibc defaults in use";
  return absl::StrCat("malloc: ", settings.arena_max, " arenas, mmap and trim thresholds ",
                      settings.mmap_threshold >> 10, " KiB (set MALLOC_ARENA_MAX or "
                      "GLIBC_TUNABLES to override)");
#else
  (void)settings;
  return "malloc: not glibc; allocator defaults in use";
#endif
}

}  // namespace compressd::server
