// The quantized KV codecs through the KvCodec interface, driven the way ModelRunner drives
// them: Store every token of a step (here in a shuffled order, as worker threads may), Seal the
// blocks whose last slot was stored, then Attend. Compared with the fp32 codec.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "engine/kv/kv_codec.h"

namespace compressd {
namespace {

KvGeometry Geo(int hd = 32, int bs = 16) {
  KvGeometry g;
  g.n_layers = 2;
  g.n_heads = 8;
  g.n_kv_heads = 2;
  g.head_dim = hd;
  g.block_size = bs;
  return g;
}

TEST(QuantKvCodec, NamesAndErrors) {
  const auto names = KvCodecNames();
  for (const char* n : {"int8", "int4", "int2", "gear"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
    EXPECT_TRUE(MakeKvCodec(n, Geo()).ok()) << n;
  }
  EXPECT_TRUE(MakeKvCodec("int4:g16", Geo()).ok());
  EXPECT_TRUE(MakeKvCodec("int4:v2", Geo()).ok());
  EXPECT_TRUE(MakeKvCodec("int2:k4,noclip", Geo()).ok());
  EXPECT_TRUE(MakeKvCodec("gear+int4", Geo()).ok());
  EXPECT_TRUE(MakeKvCodec("gear:r2:o5%", Geo()).ok());
  EXPECT_TRUE(MakeKvCodec("int2+gear:o16", Geo()).ok());
  for (const char* bad : {"int4:zz", "int4:g12", "int4:k3", "int3", "foo", "int4+bogus",
                          "int4+int2", "gear:r9", "gear:q1"}) {
    auto c = MakeKvCodec(bad, Geo());
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad), std::string::npos) << c.status().message();
  }
}

TEST(QuantKvCodec, BytesPerToken) {
  auto fp16 = *MakeKvCodec("fp16", Geo(32, 64));
  auto i8 = *MakeKvCodec("int8", Geo(32, 64));
  auto i4 = *MakeKvCodec("int4", Geo(32, 64));
  auto i2 = *MakeKvCodec("int2", Geo(32, 64));
  EXPECT_GT(fp16->BytesPerToken() / i8->BytesPerToken(), 1.7);
  EXPECT_GT(fp16->BytesPerToken() / i4->BytesPerToken(), 3.2);
  EXPECT_GT(fp16->BytesPerToken() / i2->BytesPerToken(), 5.0);
}

// Relative L2 error of the attention output against fp32 KV after storing n tokens.
double AttendError(const std::string& name, int n_tokens, bool threads, KvGeometry g) {
  auto ref = *MakeKvCodec("fp32", g);
  auto c = *MakeKvCodec(name, g);
  const int bs = g.block_size, nb = (n_tokens + bs - 1) / bs;
  const int kvd = g.n_kv_heads * g.head_dim, qd = g.n_heads * g.head_dim;
  std::vector<uint8_t> ref_mem(ref->LayerBlockBytes() * nb), mem(c->LayerBlockBytes() * nb);
  std::vector<const uint8_t*> rp(nb), cp(nb);
  for (int i = 0; i < nb; ++i) {
    rp[i] = ref_mem.data() + ref->LayerBlockBytes() * i;
    cp[i] = mem.data() + c->LayerBlockBytes() * i;
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> k(static_cast<size_t>(n_tokens) * kvd), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = nd(rng) * ((i % g.head_dim) % 5 == 1 ? 5.0f : 1.0f);
    v[i] = nd(rng);
  }
  std::vector<int> order(n_tokens);
  for (int t = 0; t < n_tokens; ++t) order[t] = t;
  std::shuffle(order.begin(), order.end(), rng);
  auto store = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      const int t = order[i];
      uint8_t* blk = const_cast<uint8_t*>(cp[t / bs]);
      c->Store(0, blk, t % bs, k.data() + t * kvd, v.data() + t * kvd);
      ref->Store(0, const_cast<uint8_t*>(rp[t / bs]), t % bs, k.data() + t * kvd,
                 v.data() + t * kvd);
    }
  };
  if (threads) {
    std::thread a(store, 0, n_tokens / 2), b(store, n_tokens / 2, n_tokens);
    a.join();
    b.join();
  } else {
    store(0, n_tokens);
  }
  for (int t = 0; t < n_tokens; ++t) {
    if (t % bs == bs - 1) c->Seal(0, const_cast<uint8_t*>(cp[t / bs]));
  }
  std::vector<float> q(qd), o1(qd), o2(qd), scratch(c->ScratchFloats(n_tokens));
  double num = 0, den = 0;
  for (int n_ctx : {1, n_tokens / 2, n_tokens}) {
    if (n_ctx < 1) continue;
    for (auto& x : q) x = nd(rng);
    ref->Attend(0, q.data(), rp.data(), n_ctx, 0.2f, o1.data(), scratch.data(), 0, g.n_heads);
    c->Attend(0, q.data(), cp.data(), n_ctx, 0.2f, o2.data(), scratch.data(), 0, g.n_heads);
    for (int i = 0; i < qd; ++i) num += (o1[i] - o2[i]) * (o1[i] - o2[i]), den += o1[i] * o1[i];
  }
  return std::sqrt(num / den);
}

TEST(QuantKvCodec, AttentionCloseToFp32) {
  for (bool threads : {false, true}) {
    // 77 tokens: 4 sealed blocks and a staged tail of 13.
    EXPECT_LT(AttendError("int8", 77, threads, Geo()), 0.01);
    EXPECT_LT(AttendError("int4", 77, threads, Geo()), 0.12);
    EXPECT_LT(AttendError("int2", 77, threads, Geo()), 0.45);
    EXPECT_LT(AttendError("int4:g16", 77, threads, Geo(64, 32)), 0.12);
    EXPECT_LT(AttendError("gear", 77, threads, Geo()), AttendError("int2", 77, threads, Geo()));
  }
  // head_dim 8 (stories260K) runs the scalar path.
  EXPECT_LT(AttendError("int4:g8", 50, false, Geo(8, 16)), 0.15);
  // A context entirely in the staged tail is fp16: nearly exact.
  EXPECT_LT(AttendError("int2", 10, false, Geo()), 2e-3);
}

}  // namespace
}  // namespace compressd
