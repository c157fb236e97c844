// Fuzzes the df11 validator (kernels/dfloat11.h: ValidateDf11), the gate between a compressed
// checkpoint on disk and the df11 decoders. Two modes, chosen by the first byte:
//   0: the four buffers of a df11 weight taken raw from the input (hostile checkpoint);
//   1: a real weight packed from the input's bytes, then a few bytes of its buffers
//      overwritten at positions the input chooses (a near-valid, corrupted checkpoint).
// Whatever ValidateDf11 accepts must decode without reading out of bounds (ASan), and the
// fast decoder and the GEMM must agree with the reference decoder.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/dfloat11.h"

namespace {

struct Reader {
  const uint8_t* p;
  size_t n;
  uint8_t Byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::vector<uint8_t> Take(size_t k) {
    k = k < n ? k : n;
    std::vector<uint8_t> v(p, p + k);
    p += k;
    n -= k;
    return v;
  }
};

void Check(const compressd::kernels::PackedWeight& w) {
  using namespace compressd::kernels;
  if (!ValidateDf11(w).empty()) return;
  const size_t count = static_cast<size_t>(w.rows * w.cols);
  std::vector<uint16_t> ref(count), fast(count);
  Df11DecodeRowsRef(w, 0, w.rows, ref.data());
  Df11DecodeRows(w, 0, w.rows, fast.data());
  if (ref != fast) std::abort();
  std::vector<float> x(static_cast<size_t>(w.cols), 1.0f), y(static_cast<size_t>(w.rows));
  GemmDf11(w, x.data(), 1, y.data(), w.rows, 0, w.rows);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace compressd::kernels;
  Reader in{data, size};
  const int mode = in.Byte() & 1;
  const int64_t rows = 1 + in.Byte() % 24;
  const int64_t cols = 1 + (in.Byte() | (in.Byte() << 8)) % 300;
  if (mode == 0) {
    Df11Packed raw;
    raw.rows = rows;
    raw.cols = cols;
    raw.lengths = in.Take(256);
    raw.lengths.resize(256, 0);
    raw.offsets = in.Take(static_cast<size_t>(rows + 1) * 8);
    raw.data.assign(static_cast<size_t>(rows * cols), 0x3c);
    raw.stream = in.Take(in.n);
    Check(raw.View());
    return 0;
  }
  // Mode 1: pack a real weight (bf16 bits from the input, repeated), then corrupt it.
  std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < bits.size(); ++i) {
    const size_t j = size > 4 ? 4 + (2 * i) % (size - 4) : 0;
    bits[i] = static_cast<uint16_t>(j + 1 < size ? data[j] | (data[j + 1] << 8) : i * 40503u);
  }
  Df11Packed packed = PackDf11(bits.data(), rows, cols);
  const int edits = in.Byte() % 8;
  for (int e = 0; e < edits; ++e) {
    const int which = in.Byte() % 4;
    std::vector<uint8_t>& buf = which == 0   ? packed.data
                                : which == 1 ? packed.stream
                                : which == 2 ? packed.offsets
                                             : packed.lengths;
    if (buf.empty()) continue;
    const size_t at = (in.Byte() | (in.Byte() << 8)) % buf.size();
    buf[at] = in.Byte();
  }
  const PackedWeight w = packed.View();
  Check(w);
  return 0;
}
