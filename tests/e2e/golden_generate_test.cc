// `compressd generate --model stories260K --temperature 0 --max-tokens 256` with no prompt
// prints exactly expected_greedy_256.txt on stdout (logs on stderr).
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

std::string RunCapture(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *rc = pclose(p);
  return out;
}

TEST(GoldenGenerate, Stories260KGreedyFromBosMatchesExpected) {
  REQUIRE_SHARED(dir, "models/stories260K");
  const std::string expected = testing::ReadFileOrDie(dir + "/expected_greedy_256.txt");
  int rc = -1;
  const std::string out = RunCapture(testing::BinaryDir() + "/server/compressd generate --model " +
                                         dir + " --temperature 0 --max-tokens 256 2>/dev/null",
                                     &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, expected);
}

TEST(GoldenGenerate, SameSeedSameText) {
  REQUIRE_SHARED(dir, "models/stories260K");
  int rc1 = -1, rc2 = -1;
  const std::string cmd = testing::BinaryDir() + "/server/compressd generate --model " + dir +
                          " --temperature 1.0 --seed 42 --max-tokens 64 --prompt 'Tom had' 2>/dev/null";
  const std::string a = RunCapture(cmd, &rc1), b = RunCapture(cmd, &rc2);
  EXPECT_EQ(rc1, 0);
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 20u);
}

TEST(GoldenGenerate, UnknownOptionAndBadModelFailClearly) {
  int rc = -1;
  std::string out = RunCapture(testing::BinaryDir() + "/server/compressd generate --bogus 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unknown option --bogus"), std::string::npos) << out;
  out = RunCapture(testing::BinaryDir() + "/server/compressd generate --model /nonexistent 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("/nonexistent"), std::string::npos) << out;
}

}  // namespace
}  // namespace compressd
