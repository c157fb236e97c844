// The loader's page-release rule (model_loader.h, LinearHoldsOwner): once a built Linear no
// longer reads the checkpoint's bytes, the tensor's file pages leave resident memory, for
// every kind of load that converts, compresses or copies; a Linear viewing the file keeps
// its reference. Measured as the resident bytes of the checkpoint's own mapping
// (/proc/self/smaps), which is what a conversion used to leave behind: loading kdocs-7m
// (f32, 27.8 MB) with --weights bf16 kept the whole file resident before this rule.
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/compress/linear.h"
#include "engine/compress/sparse_util.h"
#include "engine/core/mmap_file.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/ggml_quant.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

// Sum of the "Rss:" lines (kB) of every mapping of `path` in this process.
int64_t MappedRssKb(const std::string& path) {
  char real[PATH_MAX];
  const std::string want = ::realpath(path.c_str(), real) != nullptr ? real : path;
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  int64_t kb = 0;
  while (std::getline(in, line)) {
    // Mapping header lines start with an address range "start-end perms ...".
    const bool header = !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
                        line.find('-') != std::string::npos &&
                        line.find(':') > line.find(' ');
    if (header) {
      inside = line.size() >= want.size() &&
               line.compare(line.size() - want.size(), want.size(), want) == 0;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) {
      std::istringstream ss(line.substr(4));
      int64_t v = 0;
      ss >> v;
      kb += v;
    }
  }
  return kb;
}

TEST(LoaderPageRelease, ConvertingAndCompressingLoadsKeepNoLinearPagesResident) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  const std::string file = dir + "/model.safetensors";
  for (const char* weights : {"bf16", "f16", "int8", "int4"}) {
    SCOPED_TRACE(weights);
    LoadOptions lo;
    lo.model = dir;
    lo.weights = weights;
    auto model = LoadModel(lo);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_NE((*model)->weights.layers[0].q.format_name, "f32");
    // Every linear was converted or compressed (they read their own buffers); what may stay
    // mapped is the embedding table and the norms, which the loader reads itself: kdocs-7m's
    // 8 layers of linears are ~21 MB of the 27.8 MB file.
    const int64_t kb = MappedRssKb(file);
    EXPECT_LT(kb, 4 * 1024) << "resident KiB of " << file << " with --weights " << weights;
  }
}

TEST(LoaderPageRelease, StoredFormatWeightsAreCopiedUnlessMmapWeights) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  for (bool mmap_weights : {false, true}) {
    SCOPED_TRACE(mmap_weights);
    LoadOptions lo;
    lo.model = dir;  // f32 safetensors: "auto" keeps f32 as stored
    lo.mmap_weights = mmap_weights;
    auto model = LoadModel(lo);
    ASSERT_TRUE(model.ok()) << model.status();
    const Linear& q = (*model)->weights.layers[0].q;
    EXPECT_EQ(q.format_name, "f32");
    EXPECT_EQ(MmapFile::IsMapped(q.w.data, q.w.data_bytes), mmap_weights);
    EXPECT_EQ(MmapFile::IsMapped((*model)->weights.layers[7].down.w.data, 1), mmap_weights);
    if (!mmap_weights) {
      EXPECT_LT(MappedRssKb(dir + "/model.safetensors"), 4 * 1024);
    }
  }
}

TEST(LoaderPageRelease, LinearHoldsOwnerTellsViewsFromCopies) {
  std::string bytes(64 * 64 * sizeof(float), '\0');
  for (size_t i = 0; i < bytes.size(); i += 4) bytes[i + 2] = static_cast<char>(0x3f);
  std::shared_ptr<MmapFile> file = MmapFile::FromBytes(bytes);
  TensorView t;
  t.name = "w";
  t.dtype = DType::kF32;
  t.shape = {64, 64};
  t.data = file->data();
  t.bytes = file->size();
  t.owner = file;
  auto view = MakeDenseLinear(t, DType::kF32);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_TRUE(LinearHoldsOwner(*view, t.owner));
  auto converted = MakeDenseLinear(t, DType::kBF16);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_FALSE(LinearHoldsOwner(*converted, t.owner));
  // A two-GEMM Linear that reads the file through its first factor still holds it.
  Linear two = *converted;
  two.first = std::make_shared<Linear>(*view);
  EXPECT_TRUE(LinearHoldsOwner(two, t.owner));
  EXPECT_FALSE(LinearHoldsOwner(*view, nullptr));
}

TEST(LoaderPageRelease, GgufBlocksCopiedOrViewed) {
  // 2 rows of 32 Q8_0 columns: one 34-byte block per row (fp16 scale + 32 int8 codes).
  std::string bytes(2 * 34, '\0');
  for (int r = 0; r < 2; ++r) {
    bytes[r * 34 + 1] = static_cast<char>(0x3c);  // scale 1.0 (fp16 0x3c00)
    for (int i = 0; i < 32; ++i) bytes[r * 34 + 2 + i] = static_cast<char>(i - 16 + r);
  }
  std::shared_ptr<MmapFile> file = MmapFile::FromBytes(bytes);
  TensorView t;
  t.name = "blk.0.attn_q.weight";
  t.storage = StorageType::kQ8_0;
  t.shape = {2, 32};
  t.data = file->data();
  t.bytes = file->size();
  t.owner = file;
  auto in_place = MakeGgufLinear(t);
  ASSERT_TRUE(in_place.ok()) << in_place.status();
  EXPECT_TRUE(LinearHoldsOwner(*in_place, t.owner));
  // FromBytes memory is not a file mapping: nothing to move.
  EXPECT_EQ(OwnMappedBuffers(*in_place).w.data, t.data);
}

TEST(LoaderPageRelease, OwnMappedBuffersMovesFileViewsOnly) {
  const std::string path = ::testing::TempDir() + "/own_mapped.bin";
  std::string bytes(3 * 4096 + 100, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  { std::ofstream(path, std::ios::binary) << bytes; }
  auto file = MmapFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::shared_ptr<const void> owner = *file;
  Linear l;
  l.w.data = (*file)->data() + 100;
  l.w.data_bytes = 4096;
  l.w.aux[1] = (*file)->data() + 8192;
  l.w.aux_bytes[1] = 300;
  l.storage.push_back(owner);
  auto second = std::make_shared<Linear>();
  second->w.data = (*file)->data() + 5000;
  second->w.data_bytes = 64;
  second->storage.push_back(owner);
  l.first = second;
  ASSERT_TRUE(LinearHoldsOwner(l, owner));
  const Linear c = OwnMappedBuffers(l);
  EXPECT_FALSE(LinearHoldsOwner(c, owner));
  EXPECT_FALSE(MmapFile::IsMapped(c.w.data, 1));
  EXPECT_EQ(std::string(static_cast<const char*>(c.w.data), 4096), bytes.substr(100, 4096));
  EXPECT_EQ(std::string(static_cast<const char*>(c.w.aux[1]), 300), bytes.substr(8192, 300));
  EXPECT_EQ(c.w.aux[0], nullptr);
  ASSERT_NE(c.first, nullptr);
  EXPECT_EQ(std::string(static_cast<const char*>(c.first->w.data), 64), bytes.substr(5000, 64));
  // One buffer outside the mapping: the Linear is left as it is.
  std::vector<uint8_t> heap(64, 1);
  Linear mixed = l;
  mixed.w.aux[2] = heap.data();
  mixed.w.aux_bytes[2] = heap.size();
  EXPECT_EQ(OwnMappedBuffers(mixed).w.data, l.w.data);
  std::remove(path.c_str());
}

TEST(MmapFileCopy, CopyToOwnedCopiesEveryByteOfAnyLength) {
  // 1 byte to 3 MiB: one thread; 97 MiB + 5: split over the cores (parts end mid-page).
  for (size_t n : {size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{3} << 20,
                   (size_t{97} << 20) + 5}) {
    std::string src(n, '\0');
    for (size_t i = 0; i < n; ++i) src[i] = static_cast<char>((i * 131 + 7) & 0xff);
    std::shared_ptr<MmapFile> file = MmapFile::FromBytes(src);
    std::shared_ptr<const uint8_t> copy = MmapFile::CopyToOwned(file->data(), n);
    ASSERT_NE(copy, nullptr);
    EXPECT_NE(static_cast<const void*>(copy.get()), static_cast<const void*>(file->data()));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(copy.get()), n), src) << n;
  }
  EXPECT_EQ(MmapFile::CopyToOwned("x", 0), nullptr);
}

TEST(MmapFileCopy, CopyToOwnedFromAMappedFile) {
  const std::string path = ::testing::TempDir() + "/copy_to_owned.bin";
  std::string src(10000, '\0');
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i % 251);
  { std::ofstream(path, std::ios::binary) << src; }
  auto file = MmapFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  // An unaligned range inside the mapping (the source madvise rounds to pages).
  std::shared_ptr<const uint8_t> copy = MmapFile::CopyToOwned((*file)->data() + 123, 9000);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(copy.get()), 9000), src.substr(123, 9000));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace compressd
