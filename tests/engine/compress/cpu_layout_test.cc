// LoadOptions::cpu_kernel_layouts (UseCpuKernelLayouts, engine/compress/linear.h): on a CPU
// whose W4A8 kernel reads the superblock order, kdocs-7m's int4 down projections (704
// columns: one 512-column span and a tail) take that order and nothing else changes: the
// same weights (DequantizeRows), the same greedy tokens and logits within float rounding;
// a compressed checkpoint read in place (--mmap-weights) is copied, never written; and a
// model in kernel order cannot be saved as a checkpoint. GGUF Q4_0 matrices take their split
// layout (kernels/ggml_quant.h) the same way.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/compress/checkpoint_io.h"
#include "engine/core/mmap_file.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "tests/util/kdocs_gguf.h"
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

// rel: of the largest |logit| at each position.
void ExpectCloseLogits(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab,
                       float rel = 1e-4f) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t p = 0; p < a.size() / vocab; ++p) {
    const float* x = a.data() + p * vocab;
    const float* y = b.data() + p * vocab;
    float scale = 0;
    for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(x[i]));
    for (int64_t i = 0; i < vocab; ++i) {
      ASSERT_NEAR(x[i], y[i], rel * scale) << "position " << p << " token " << i;
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

// GGUF Q8_0 and Q4_0 files: every matrix takes the split layout (kernels/ggml_quant.h).
class GgufSplitLayout : public ::testing::TestWithParam<GgmlType> {};

TEST_P(GgufSplitLayout, EveryMatrixTakesIt) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  const bool q8 = GetParam() == GgmlType::kQ8_0;
  const kernels::WeightFormat format = q8 ? kernels::GgufQ8_0Format() : kernels::GgufQ4_0Format();
  if (!kernels::GgufSplitApplies(format, 256)) {
    GTEST_SKIP() << "the A8 kernels do not run on this CPU";
  }
  const std::string path = testing::WriteKdocsGguf(dir, GetParam());
  const std::string before = testing::ReadFileOrDie(path);
  auto plain = Load(path, "auto", false);
  auto fast = Load(path, "auto", true);
  auto in_place = Load(path, "auto", true, /*mmap=*/true);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(fast.ok()) << fast.status();
  ASSERT_TRUE(in_place.ok()) << in_place.status();
  for (size_t i = 0; i < (*fast)->weights.layers.size(); ++i) {
    const LayerWeights& P = (*plain)->weights.layers[i];
    for (const auto* m : {&*fast, &*in_place}) {
      const LayerWeights& F = (*m)->weights.layers[i];
      // Every matrix has 256 or 704 columns (multiples of 64).
      for (auto [p, f] : {std::pair{&P.q, &F.q}, {&P.k, &F.k}, {&P.v, &F.v}, {&P.o, &F.o},
                          {&P.gate, &F.gate}, {&P.up, &F.up}, {&P.down, &F.down}}) {
        EXPECT_EQ(p->w.format.variant, format.variant);
        EXPECT_EQ(p->w.format.layout, 0);
        EXPECT_EQ(f->w.format.layout, kernels::kLayoutGgufSplit) << "layer " << i;
        EXPECT_EQ(f->bytes(), p->bytes());
        EXPECT_FALSE(MmapFile::IsMapped(f->w.data, f->w.data_bytes));
        ASSERT_EQ(Rows(*f), Rows(*p)) << "layer " << i;
      }
    }
  }
  EXPECT_EQ((*fast)->WeightBytes(), (*plain)->WeightBytes());
  const std::vector<float> want = testing::PrefillLogits(*plain, kToks);
  const std::vector<float> got = testing::PrefillLogits(*fast, kToks);
  // Each product matches the file layout's kernel to ~1 ulp (ggml_quant_test), but the next
  // layer rounds its activations to int8: a last-bit change at a rounding boundary moves one
  // code, which shows as ~1e-3 of the logits' scale here (kdocs-7m, 12 positions).
  ExpectCloseLogits(want, got, (*plain)->config.vocab_size, 3e-3f);
  EXPECT_EQ(testing::PrefillLogits(*in_place, kToks), got);  // same codes, same kernel
  EXPECT_EQ(testing::ReadFileOrDie(path), before) << "the GGUF file changed";
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Formats, GgufSplitLayout, ::testing::Values(GgmlType::kQ8_0, GgmlType::kQ4_0),
                         [](const auto& info) {
                           return info.param == GgmlType::kQ8_0 ? "Q8_0" : "Q4_0";
                         });

// Bytes the Linear views from its checkpoint tensor (LoadModel passes them as source_bytes:
// a tied embedding table may view them too) are rewritten into a copy; bytes it owns alone
// are rewritten in place.
TEST(CpuKernelLayouts, TensorBytesAreCopiedOwnedBytesRewrittenInPlace) {
  if (!kernels::GgufSplitApplies(kernels::GgufQ4_0Format(), 128)) {
    GTEST_SKIP() << "the W4A8 kernel does not run on this CPU";
  }
  const int64_t rows = 3, cols = 128;
  auto bytes = std::make_shared<std::vector<uint8_t>>(
      kernels::GgufQuantBytes(kernels::GgufQ4_0Format(), rows, cols));
  for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = static_cast<uint8_t>(i * 37 % 251);
  for (size_t b = 0; b < bytes->size(); b += sizeof(kernels::GgufBlockQ4_0)) {
    (*bytes)[b + 1] = 0x2c;  // fp16 d ~ 0.06: no inf/nan scales
  }
  const std::vector<uint8_t> original = *bytes;
  Linear l;
  l.w.format = kernels::GgufQ4_0Format();
  l.w.rows = rows;
  l.w.cols = cols;
  l.w.data = bytes->data();
  l.w.data_bytes = bytes->size();
  l.storage.push_back(bytes);
  const std::vector<float> want = Rows(l);

  const Linear copied = UseCpuKernelLayouts(l, l.w.data);
  EXPECT_EQ(copied.w.format.layout, kernels::kLayoutGgufSplit);
  EXPECT_NE(copied.w.data, l.w.data);
  EXPECT_EQ(*bytes, original) << "the tensor's bytes were written";
  EXPECT_EQ(Rows(copied), want);

  const Linear in_place = UseCpuKernelLayouts(l);
  EXPECT_EQ(in_place.w.format.layout, kernels::kLayoutGgufSplit);
  EXPECT_EQ(in_place.w.data, l.w.data);
  EXPECT_NE(*bytes, original);
  EXPECT_EQ(Rows(in_place), want);
}

}  // namespace
}  // namespace compressd
