#include <cstdio>

#include "server/cli/commands.h"

namespace compressd::cli {

int RunBench(int, char**) {
  std::fprintf(stderr, "compressd bench: not built yet in this version\n");
  return 1;
}

}  // namespace compressd::cli
