#include <cstdio>

#include "server/cli/commands.h"

namespace compressd::cli {

int RunEval(int, char**) {
  std::fprintf(stderr, "compressd eval: not built yet in this version\n");
  return 1;
}

}  // namespace compressd::cli
