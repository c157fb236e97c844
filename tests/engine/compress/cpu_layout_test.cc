// LoadOptions::cpu_kernel_layouts (UseCpuKernelLayouts, engine/compress/linear.h): on a CPU
// whose W4A8 kernel reads the superblock order, kdocs-7m's int4 down projections (704
// columns: one 512-column span and a tail) take that order and nothing else changes: the
// same weights (DequantizeRows), the same greedy tokens and logits within float rounding;
// a compressed checkpoint read in place (--mmap-weights) is copied, never written; and a
// model in kernel order cannot be saved as a checkpoint.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/compress/checkpoint_io.h"
#include "engine/core/mmap_file.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"
#include "tests/util/model_logits.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

const std::vector<int32_t> kToks = {1, 450, 3012, 77, 1999, 5, 8, 4000, 12, 99, 310, 2047};

absl::StatusOr<std::shared_ptr<Model>> Load(const std::string& model, const std::string& weights,
                                            bool layouts, bool mmap = false) {
  LoadOptions lo;
  lo.model = model;
  lo.weights = weights;
  lo.cpu_kernel_layouts = layouts;
  lo.mmap_weights = mmap;
  return LoadModel(lo);
}

bool SuperblocksHere() {
  kernels::WeightFormat f;
  f.kind = kernels::WeightKind::kQuant;
  f.bits = 4;
  f.symmetric = false;
  f.group_size = 128;
  f.variant = static_cast<uint32_t>(kernels::QuantVariant::kGroup);
  return kernels::Quant4UsesSuperblocks(f);
}

std::vector<float> Rows(const Linear& l) {
  std::vector<float> out(static_cast<size_t>(l.w.rows * l.w.cols));
  kernels::DequantizeRows(l.w, 0, l.w.rows, out.data());
  return out;
}

void ExpectCloseLogits(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t p = 0; p < a.size() / vocab; ++p) {
    const float* x = a.data() + p * vocab;
    const float* y = b.data() + p * vocab;
    float scale = 0;
    for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(x[i]));
    for (int64_t i = 0; i < vocab; ++i) {
      ASSERT_NEAR(x[i], y[i], 1e-4f * scale) << "position " << p << " token " << i;
    }
    EXPECT_EQ(std::max_element(x, x + vocab) - x, std::max_element(y, y + vocab) - y)
        << "greedy token differs at position " << p;
  }
}

TEST(CpuKernelLayouts, Int4DownProjectionsTakeTheSuperblockOrder) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  if (!SuperblocksHere()) GTEST_SKIP() << "the W4A8 kernel does not run on this CPU";
  auto plain = Load(dir, "int4", false);
  auto fast = Load(dir, "int4", true);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(fast.ok()) << fast.status();
  for (size_t i = 0; i < (*fast)->weights.layers.size(); ++i) {
    const LayerWeights& P = (*plain)->weights.layers[i];
    const LayerWeights& F = (*fast)->weights.layers[i];
    EXPECT_EQ(P.down.w.format.layout, 0);
    EXPECT_EQ(F.down.w.format.layout, kernels::kLayoutA8Superblock) << "layer " << i;
    EXPECT_EQ(F.down.format_name, P.down.format_name);
    EXPECT_EQ(F.down.bytes(), P.down.bytes());
    EXPECT_EQ(F.q.w.format.layout, 0) << "256 columns: no full span, nothing to reorder";
    ASSERT_EQ(Rows(F.down), Rows(P.down)) << "layer " << i;
  }
  EXPECT_EQ((*fast)->WeightBytes(), (*plain)->WeightBytes());
  ExpectCloseLogits(testing::PrefillLogits(*plain, kToks), testing::PrefillLogits(*fast, kToks),
                    (*plain)->config.vocab_size);
  // Checkpoints hold the canonical order.
  const std::string out = ::testing::TempDir() + "compressd_layout_refuse_" + std::to_string(::getpid());
  const absl::Status saved = SaveCompressedCheckpoint(**fast, out, dir);
  EXPECT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition) << saved;
  EXPECT_NE(std::string(saved.message()).find("model.layers.0.mlp.down_proj"), std::string::npos)
      << saved;
}

TEST(CpuKernelLayouts, CheckpointReadInPlaceIsCopiedNotWritten) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  if (!SuperblocksHere()) GTEST_SKIP() << "the W4A8 kernel does not run on this CPU";
  auto plain = Load(dir, "int4", false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  const std::string out = ::testing::TempDir() + "compressd_layout_" + std::to_string(::getpid());
  ASSERT_TRUE(SaveCompressedCheckpoint(**plain, out, dir).ok());
  const std::string file = out + "/model.safetensors";
  const std::string before = testing::ReadFileOrDie(file);
  const std::vector<float> want = testing::PrefillLogits(*plain, kToks);

  auto in_place = Load(out, "auto", true, /*mmap=*/true);
  auto copied = Load(out, "auto", true, /*mmap=*/false);
  ASSERT_TRUE(in_place.ok()) << in_place.status();
  ASSERT_TRUE(copied.ok()) << copied.status();
  for (const auto* m : {&*in_place, &*copied}) {
    const Linear& down = (*m)->weights.layers[2].down;
    EXPECT_EQ(down.w.format.layout, kernels::kLayoutA8Superblock);
    EXPECT_FALSE(MmapFile::IsMapped(down.w.data, down.w.data_bytes));
    ASSERT_EQ(Rows(down), Rows((*plain)->weights.layers[2].down));
  }
  // With --mmap-weights the scales are still read from the file; the codes were copied.
  EXPECT_TRUE(MmapFile::IsMapped((*in_place)->weights.layers[2].down.w.aux[0],
                                 (*in_place)->weights.layers[2].down.w.aux_bytes[0]));
  const std::vector<float> a = testing::PrefillLogits(*in_place, kToks);
  EXPECT_EQ(a, testing::PrefillLogits(*copied, kToks));  // same codes, same kernel
  ExpectCloseLogits(want, a, (*plain)->config.vocab_size);
  EXPECT_EQ(testing::ReadFileOrDie(file), before) << "the checkpoint file changed";
}

}  // namespace
}  // namespace compressd
