#include "engine/core/byte_size.h"

#include "gtest/gtest.h"

namespace compressd {
namespace {

// One syntax for serve's flags, the other subcommands' flags and recipe budgets. serve and
// the other subcommands used to disagree on "1GB" (2^30 there, 10^9 here); recipes knew no
// "Ki" or "T".
TEST(ByteSize, KubernetesUnits) {
  EXPECT_EQ(*ParseByteSize("1024"), 1024);
  EXPECT_EQ(*ParseByteSize("0"), 0);
  EXPECT_EQ(*ParseByteSize("4k"), 4000);
  EXPECT_EQ(*ParseByteSize("4kB"), 4000);
  EXPECT_EQ(*ParseByteSize("4Ki"), 4096);
  EXPECT_EQ(*ParseByteSize("96KiB"), 96 * 1024);
  EXPECT_EQ(*ParseByteSize("2MiB"), 2 << 20);
  EXPECT_EQ(*ParseByteSize("600MB"), 600000000);
  EXPECT_EQ(*ParseByteSize("4.5mb"), 4500000);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), 1610612736);
  EXPECT_EQ(*ParseByteSize("8Gi"), int64_t{8} << 30);
  EXPECT_EQ(*ParseByteSize(" 1 TB "), int64_t{1000000000000});
  EXPECT_EQ(*ParseByteSize("1TiB"), int64_t{1} << 40);
}

TEST(ByteSize, RejectsWithTheText) {
  for (const char* bad : {"1iB", "1PB", "MB", "1e999", "1e3", "", "lots", "-1", "-5MB", "inf",
                          "infGB", "nan", "18446744073709551616", "22222222222222222222222600MB"}) {
    auto r = ParseByteSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(r.status().message()).find(std::string("'") + bad + "'"),
              std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace compressd
