#include <cstdio>

#include "server/cli/commands.h"

namespace compressd::cli {

int RunCompress(int, char**) {
  std::fprintf(stderr, "compressd compress: not built yet in this version\n");
  return 1;
}

}  // namespace compressd::cli
