// DFloat11-style lossless bf16 weights (layout in kernels/dfloat11.h): the encoder
// (length-limited canonical Huffman over the exponent byte), validation, the scalar reference
// decoder, the table decoder and the GEMM (decode a row group into a bf16 tile, then the
// dense bf16 kernel).
#include "kernels/dfloat11.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>
#include <utility>

#include "kernels/format_ops.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

constexpr int kLutSize = 1 << kDf11MaxCodeLen;

// A canonical code from its lengths: codes[s] (right-aligned, `len[s]` bits).
struct Canonical {
  uint16_t code[256] = {};
  uint8_t len[256] = {};
};

// Canonical order: by (length, symbol).
Canonical MakeCanonical(const uint8_t* lengths) {
  Canonical c;
  std::memcpy(c.len, lengths, 256);
  uint32_t code = 0;
  int prev = 0;
  for (int l = 1; l <= kDf11MaxCodeLen; ++l) {
    for (int s = 0; s < 256; ++s) {
      if (lengths[s] != l) continue;
      code <<= (l - prev);
      prev = l;
      c.code[s] = static_cast<uint16_t>(code);
      ++code;
    }
  }
  return c;
}

// Huffman code lengths of the 256 counts, limited to kDf11MaxCodeLen by halving the counts
// (keeping every used symbol >= 1) until the tree is shallow enough.
void HuffmanLengths(const uint64_t* counts_in, uint8_t* lengths) {
  std::vector<uint64_t> counts(counts_in, counts_in + 256);
  std::fill(lengths, lengths + 256, 0);
  int used = 0, only = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s]) {
      ++used;
      only = s;
    }
  }
  if (used == 0) return;
  if (used == 1) {
    lengths[only] = 1;
    return;
  }
  for (;;) {
    // Nodes 0..255 are leaves; internal nodes are appended. Ties broken by node id so the
    // code is deterministic.
    std::vector<int> parent(512, -1);
    using Item = std::pair<uint64_t, int>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> q;
    for (int s = 0; s < 256; ++s) {
      if (counts[s]) q.push({counts[s], s});
    }
    int next = 256;
    while (q.size() > 1) {
      const Item a = q.top();
      q.pop();
      const Item b = q.top();
      q.pop();
      parent[a.second] = next;
      parent[b.second] = next;
      q.push({a.first + b.first, next++});
    }
    int maxlen = 0;
    for (int s = 0; s < 256; ++s) {
      if (!counts[s]) continue;
      int l = 0;
      for (int p = s; parent[p] >= 0; p = parent[p]) ++l;
      lengths[s] = static_cast<uint8_t>(l);
      maxlen = std::max(maxlen, l);
    }
    if (maxlen <= kDf11MaxCodeLen) return;
    for (auto& c : counts) {
      if (c) c = std::max<uint64_t>(1, c >> 1);
    }
  }
}

// The decode table: entry = length << 8 | symbol for every kDf11MaxCodeLen-bit window that
// starts with that symbol's code; 0 (length 0) for windows that start with no code.
void BuildLut(const uint8_t* lengths, uint16_t* lut) {
  std::fill(lut, lut + kLutSize, uint16_t{0});
  const Canonical c = MakeCanonical(lengths);
  for (int s = 0; s < 256; ++s) {
    const int l = lengths[s];
    if (l == 0) continue;
    const uint32_t first = static_cast<uint32_t>(c.code[s]) << (kDf11MaxCodeLen - l);
    const uint32_t count = 1u << (kDf11MaxCodeLen - l);
    const uint16_t e = static_cast<uint16_t>(l << 8 | s);
    for (uint32_t i = 0; i < count; ++i) lut[first + i] = e;
  }
}

inline uint64_t Load64BE(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}

inline uint16_t Bf16From(uint8_t sm, uint8_t e) {
  return static_cast<uint16_t>((sm & 0x80) << 8 | e << 7 | (sm & 0x7f));
}

const uint8_t* Stream(const PackedWeight& w) { return static_cast<const uint8_t*>(w.aux[0]); }
uint64_t RowBit(const PackedWeight& w, int64_t r) {
  uint64_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(w.aux[1]) + 8 * r, 8);
  return v;
}
const uint8_t* Lengths(const PackedWeight& w) { return static_cast<const uint8_t*>(w.aux[2]); }

// Multi-symbol table: for every kDf11MaxCodeLen-bit window, the up to 4 whole codes it
// starts with: bits used in byte 0 (so that it is the shift count as it stands), symbols in
// bytes 1..4, count in byte 5 (count >= 1 for
// every window of a valid stream; a window that starts with no code gets count 1 and
// kDf11MaxCodeLen bits so that even a corrupt stream cannot stall a decoder, but ValidateDf11
// rejects such streams).
constexpr int kMaxMulti = 4;
struct Tables {
  uint16_t lut[kLutSize];
  uint64_t multi[kLutSize];
};

void BuildTables(const uint8_t* lengths, Tables* t) {
  BuildLut(lengths, t->lut);
  constexpr uint32_t kMask = kLutSize - 1;
  for (uint32_t w = 0; w < kLutSize; ++w) {
    uint32_t e = t->lut[w];
    uint32_t used = e >> 8;
    if (used == 0) {
      t->multi[w] = uint64_t{kDf11MaxCodeLen} | uint64_t{1} << 40;
      continue;
    }
    uint32_t out = e & 0xff, n = 1, rest = (w << used) & kMask;
    for (; n < kMaxMulti; ++n) {
      const uint32_t f = t->lut[rest];
      const uint32_t l = f >> 8;
      if (l == 0 || used + l > kDf11MaxCodeLen) break;
      out |= (f & 0xff) << (8 * n);
      used += l;
      rest = (rest << l) & kMask;
    }
    t->multi[w] = used | uint64_t{out} << 8 | uint64_t{n} << 40;
  }
}

// Decodes `count` exponents of NR (<= 4) row streams starting at bit pos[i] into e[i]
// (each with >= 4 bytes of slack past count). The rows' streams are interleaved so that the
// out-of-order core overlaps their dependency chains (window -> table -> shift). One 8-byte
// load holds >= 57 bits: 5 lookups of <= kDf11MaxCodeLen bits, each giving 1-4 codes.
template <int NR>
void DecodeExponents(const uint8_t* s, const Tables& t, uint64_t* pos, int64_t count,
                     uint8_t* const* e) {
  constexpr int kShift = 64 - kDf11MaxCodeLen;
  constexpr int kLookups = 5;
  static_assert(kLookups * kDf11MaxCodeLen <= 57, "one load must hold every lookup's bits");
  int64_t k[NR];
  for (int i = 0; i < NR; ++i) k[i] = 0;
  for (;;) {
    bool room = true;
    for (int i = 0; i < NR; ++i) room &= k[i] + kMaxMulti * kLookups <= count;
    if (!room) break;
    for (int i = 0; i < NR; ++i) {
      uint64_t v = Load64BE(s + (pos[i] >> 3)) << (pos[i] & 7);
      uint32_t bits = 0;
      for (int j = 0; j < kLookups; ++j) {
        const uint64_t m = t.multi[v >> kShift];
        const uint32_t syms = static_cast<uint32_t>(m >> 8);
        std::memcpy(e[i] + k[i], &syms, 4);  // bytes past the decoded codes are overwritten
        k[i] += static_cast<int64_t>(m >> 40);
        v <<= (m & 63);  // byte 0 is <= kDf11MaxCodeLen
        bits += static_cast<uint32_t>(m) & 0xff;
      }
      pos[i] += bits;
    }
  }
  for (int i = 0; i < NR; ++i) {
    for (; k[i] < count; ++k[i]) {
      const uint64_t v = Load64BE(s + (pos[i] >> 3)) << (pos[i] & 7);
      const uint32_t x = t.lut[v >> kShift];
      pos[i] += x >> 8;
      e[i][k[i]] = static_cast<uint8_t>(x);
    }
  }
}

template <int NR>
void DecodeGroup(const PackedWeight& w, const Tables& t, int64_t r0, uint16_t* out, int64_t ldo) {
  const int64_t K = w.cols;
  const auto* sm = static_cast<const uint8_t*>(w.data);
  uint64_t pos[NR];
  for (int i = 0; i < NR; ++i) pos[i] = RowBit(w, r0 + i);
  thread_local std::vector<uint8_t> ebuf;
  const int64_t lde = K + 16;
  if (ebuf.size() < static_cast<size_t>(NR * lde)) ebuf.resize(static_cast<size_t>(4 * lde));
  uint8_t* e[NR];
  for (int i = 0; i < NR; ++i) e[i] = ebuf.data() + i * lde;
  DecodeExponents<NR>(Stream(w), t, pos, K, e);
  for (int i = 0; i < NR; ++i) {
    const uint8_t* m = sm + (r0 + i) * K;
    uint16_t* o = out + i * ldo;
    const uint8_t* ei = e[i];
    for (int64_t k = 0; k < K; ++k) o[k] = Bf16From(m[k], ei[k]);
  }
}

// Rows [row_begin, row_end) into out (row stride ldo), with prebuilt tables.
void DecodeRowsTables(const PackedWeight& w, const Tables& t, int64_t row_begin, int64_t row_end,
                      uint16_t* out, int64_t ldo) {
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) DecodeGroup<4>(w, t, r, out + (r - row_begin) * ldo, ldo);
  for (; r < row_end; ++r) DecodeGroup<1>(w, t, r, out + (r - row_begin) * ldo, ldo);
}

// Checked decode of one row (validation): false when a window starts with no code or the
// row's codes do not end exactly at `end`.
bool CheckRow(const uint8_t* s, const uint16_t* lut, uint64_t pos, uint64_t end, int64_t cols) {
  for (int64_t k = 0; k < cols; ++k) {
    const uint64_t v = Load64BE(s + (pos >> 3)) << (pos & 7);
    const uint32_t e = lut[v >> (64 - kDf11MaxCodeLen)];
    if ((e >> 8) == 0) return false;
    pos += e >> 8;
    if (pos > end) return false;
  }
  return pos == end;
}

// --- FormatOps ---

bool Supports(const WeightFormat& f) { return IsDf11(f); }
int64_t RowAlign(const WeightFormat&) { return 1; }
void Dequant(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  std::vector<uint16_t> b(static_cast<size_t>(w.cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    Df11DecodeRowsRef(w, r, r + 1, b.data());
    for (int64_t c = 0; c < w.cols; ++c) out[(r - row_begin) * w.cols + c] = BF16ToF32(b[c]);
  }
}

}  // namespace

WeightFormat Df11Format() {
  WeightFormat f;
  f.kind = WeightKind::kEntropy;
  f.dtype = DType::kBF16;
  f.bits = 16;
  f.variant = 0;
  return f;
}

bool IsDf11(const WeightFormat& f) {
  return f.kind == WeightKind::kEntropy && f.dtype == DType::kBF16 && f.bits == 16 &&
         f.variant == 0;
}

PackedWeight Df11Packed::View() const {
  PackedWeight w;
  w.format = Df11Format();
  w.rows = rows;
  w.cols = cols;
  w.data = data.data();
  w.data_bytes = data.size();
  w.aux[0] = stream.data();
  w.aux_bytes[0] = stream.size();
  w.aux[1] = offsets.data();
  w.aux_bytes[1] = offsets.size();
  w.aux[2] = lengths.data();
  w.aux_bytes[2] = lengths.size();
  return w;
}

Df11Packed PackDf11(const uint16_t* w, int64_t rows, int64_t cols) {
  Df11Packed p;
  p.rows = rows;
  p.cols = cols;
  const size_t count = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  uint64_t hist[256] = {};
  p.data.resize(count);
  for (size_t i = 0; i < count; ++i) {
    ++hist[(w[i] >> 7) & 0xff];
    p.data[i] = static_cast<uint8_t>((w[i] >> 8 & 0x80) | (w[i] & 0x7f));
  }
  p.lengths.assign(256, 0);
  HuffmanLengths(hist, p.lengths.data());
  const Canonical c = MakeCanonical(p.lengths.data());
  uint64_t total_bits = 0;
  for (int s = 0; s < 256; ++s) total_bits += hist[s] * c.len[s];
  p.stream.assign(static_cast<size_t>((total_bits + 7) / 8 + kDf11StreamPad), 0);
  p.offsets.resize(static_cast<size_t>(8 * (rows + 1)));
  uint8_t* out = p.stream.data();
  uint64_t acc = 0;  // pending bits, MSB-aligned at bit 63 - (nacc - 1)
  int nacc = 0;
  uint64_t bit = 0;
  size_t byte = 0;
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(p.offsets.data() + 8 * r, &bit, 8);
    for (int64_t k = 0; k < cols; ++k) {
      const int e = (w[r * cols + k] >> 7) & 0xff;
      const int l = c.len[e];
      acc |= static_cast<uint64_t>(c.code[e]) << (64 - nacc - l);
      nacc += l;
      bit += static_cast<uint64_t>(l);
      while (nacc >= 8) {
        out[byte++] = static_cast<uint8_t>(acc >> 56);
        acc <<= 8;
        nacc -= 8;
      }
    }
  }
  if (nacc > 0) out[byte++] = static_cast<uint8_t>(acc >> 56);
  std::memcpy(p.offsets.data() + 8 * rows, &bit, 8);
  return p;
}

Df11Packed PackDf11F32(const float* w, int64_t rows, int64_t cols) {
  std::vector<uint16_t> b(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  for (size_t i = 0; i < b.size(); ++i) b[i] = F32ToBF16(w[i]);
  return PackDf11(b.data(), rows, cols);
}

std::string ValidateDf11(const PackedWeight& w) {
  if (!IsDf11(w.format)) return "not a df11 format (kind 5, dtype bf16, bits 16, variant 0)";
  if (w.rows <= 0 || w.cols <= 0 || w.rows > (int64_t{1} << 32) || w.cols > (int64_t{1} << 32)) {
    return "rows/cols out of range";
  }
  const uint64_t count = static_cast<uint64_t>(w.rows) * static_cast<uint64_t>(w.cols);
  if (w.data == nullptr || w.data_bytes != count) {
    return "data: expected rows*cols sign/mantissa bytes";
  }
  if (w.aux[2] == nullptr || w.aux_bytes[2] != 256) return "aux2: expected 256 code lengths";
  if (w.aux[1] == nullptr || w.aux_bytes[1] != 8 * static_cast<uint64_t>(w.rows + 1)) {
    return "aux1: expected rows+1 uint64 bit offsets";
  }
  if (w.aux[0] == nullptr || w.aux_bytes[0] < static_cast<size_t>(kDf11StreamPad)) {
    return "aux0: exponent stream shorter than its padding";
  }
  const uint8_t* len = Lengths(w);
  uint32_t kraft = 0;  // in units of 2^-kDf11MaxCodeLen
  int used = 0;
  for (int s = 0; s < 256; ++s) {
    if (len[s] > kDf11MaxCodeLen)
      return "aux2: code length above " + std::to_string(kDf11MaxCodeLen);
    if (len[s]) {
      kraft += 1u << (kDf11MaxCodeLen - len[s]);
      ++used;
    }
  }
  if (used == 0) return "aux2: no symbol has a code";
  if (kraft > kLutSize) return "aux2: code lengths do not form a prefix code";
  const uint64_t stream_bits = 8 * static_cast<uint64_t>(w.aux_bytes[0] - kDf11StreamPad);
  if (RowBit(w, 0) != 0) return "aux1: first offset must be 0";
  for (int64_t r = 0; r < w.rows; ++r) {
    if (RowBit(w, r + 1) < RowBit(w, r)) return "aux1: offsets decrease";
  }
  if (RowBit(w, w.rows) > stream_bits) return "aux1: offsets run past the exponent stream";
  std::vector<uint16_t> lut(kLutSize);
  BuildLut(len, lut.data());
  for (int64_t r = 0; r < w.rows; ++r) {
    if (!CheckRow(Stream(w), lut.data(), RowBit(w, r), RowBit(w, r + 1), w.cols)) {
      return "aux0: row " + std::to_string(r) + " does not decode to cols codes within its offsets";
    }
  }
  return "";
}

void Df11DecodeRowsRef(const PackedWeight& w, int64_t row_begin, int64_t row_end, uint16_t* out) {
  // Canonical decoding by length: first code and symbols (in canonical order) per length.
  const uint8_t* len = Lengths(w);
  int32_t first[kDf11MaxCodeLen + 2] = {}, count[kDf11MaxCodeLen + 2] = {},
                                  start[kDf11MaxCodeLen + 2] = {};
  uint8_t sorted[256];
  int n = 0;
  for (int l = 1; l <= kDf11MaxCodeLen; ++l) {
    start[l] = n;
    for (int s = 0; s < 256; ++s) {
      if (len[s] == l) sorted[n++] = static_cast<uint8_t>(s);
    }
    count[l] = n - start[l];
  }
  int32_t code = 0;
  for (int l = 1; l <= kDf11MaxCodeLen; ++l) {
    first[l] = code;
    code = (code + count[l]) << 1;
  }
  const uint8_t* s = Stream(w);
  const auto* sm = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    uint64_t pos = RowBit(w, r);
    for (int64_t c = 0; c < w.cols; ++c) {
      int32_t v = 0;
      uint8_t e = 0;
      for (int l = 1; l <= kDf11MaxCodeLen; ++l) {
        v = v << 1 | ((s[pos >> 3] >> (7 - (pos & 7))) & 1);
        ++pos;
        if (v - first[l] < count[l]) {
          e = sorted[start[l] + v - first[l]];
          break;
        }
      }
      out[(r - row_begin) * w.cols + c] = Bf16From(sm[r * w.cols + c], e);
    }
  }
}

void Df11DecodeRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, uint16_t* out) {
  Tables t;
  BuildTables(Lengths(w), &t);
  DecodeRowsTables(w, t, row_begin, row_end, out, w.cols);
}

void GemmDf11(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
              int64_t row_begin, int64_t row_end) {
  const int64_t K = w.cols;
  if (n <= 0 || row_end <= row_begin) return;
  Tables t;
  BuildTables(Lengths(w), &t);
  // Larger groups for batches: the dense kernel rounds the activations once per call.
  const int64_t group = n >= 8 ? 4 * kDf11RowGroup : kDf11RowGroup;
  thread_local std::vector<uint16_t> tile;
  tile.resize(static_cast<size_t>(group * K));
  PackedWeight d;
  d.format.kind = WeightKind::kDense;
  d.format.dtype = DType::kBF16;
  d.cols = K;
  d.data = tile.data();
  for (int64_t r0 = row_begin; r0 < row_end; r0 += group) {
    const int64_t nr = std::min(group, row_end - r0);
    DecodeRowsTables(w, t, r0, r0 + nr, tile.data(), K);
    d.rows = nr;
    d.data_bytes = static_cast<size_t>(nr * K) * 2;
    // Dense results do not depend on the row range (gemm.h), so row r0 + i of this tile gives
    // what row r0 + i of a dense bf16 weight gives.
    Gemm(d, x, n, y + r0, ldy, 0, nr);
  }
}

void GemmDf11Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                 int64_t row_begin, int64_t row_end) {
  GemmRef(w, x, n, y, ldy, row_begin, row_end);
}

double Df11ExponentEntropy(const uint16_t* w, int64_t count) {
  if (count <= 0) return 0.0;
  uint64_t hist[256] = {};
  for (int64_t i = 0; i < count; ++i) ++hist[(w[i] >> 7) & 0xff];
  double h = 0;
  for (uint64_t c : hist) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / static_cast<double>(count);
    h -= p * std::log2(p);
  }
  return h;
}

const FormatOps& Df11FormatOps() {
  static const FormatOps ops = {Supports, RowAlign, GemmDf11, Dequant};
  return ops;
}

}  // namespace compressd::kernels
