#include "tests/util/test_env.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace compressd::testing {
namespace {
bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
}  // namespace

std::string SharedDir() {
  const char* e = std::getenv("COMPRESSD_SHARED_DIR");
  std::string d = e != nullptr ? e : COMPRESSD_SHARED_DIR_DEFAULT;
  return Exists(d) ? d : "";
}

std::string SharedPath(const std::string& rel) {
  const std::string d = SharedDir();
  if (d.empty()) return "";
  const std::string p = d + "/" + rel;
  return Exists(p) ? p : "";
}

std::string SourceDir() { return COMPRESSD_SOURCE_DIR; }

std::string BinaryDir() {
  const char* e = std::getenv("COMPRESSD_BINARY_DIR");
  return e != nullptr ? e : COMPRESSD_BINARY_DIR;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return "";
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace compressd::testing
