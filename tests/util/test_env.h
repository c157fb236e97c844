// Test helpers: where ../shared lives, and skipping cleanly when it is absent.
#pragma once

#include <string>

#include "gtest/gtest.h"

namespace compressd::testing {

// $COMPRESSD_SHARED_DIR, else the build-time default (<source>/../shared). Empty when the
// folder does not exist.
std::string SharedDir();
// SharedDir() + "/" + rel, or empty when SharedDir() is empty or the path is missing.
std::string SharedPath(const std::string& rel);
std::string SourceDir();
std::string BinaryDir();
std::string ReadFileOrDie(const std::string& path);

}  // namespace compressd::testing

// Skips the current test when the shared file/folder `rel` is absent; binds `var`.
#define REQUIRE_SHARED(var, rel)                                                  \
  const std::string var = ::compressd::testing::SharedPath(rel);                  \
  if (var.empty()) GTEST_SKIP() << "../shared/" << (rel) << " is absent; skipping"
