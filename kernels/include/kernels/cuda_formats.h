// Device layouts of group-wise integer weights (W4A16 / W8A16) read by the CUDA GEMV and
// tensor-core GEMM kernels, and the host-side repack that produces them. Host-only
// header: no CUDA types, so the quantized-formats code can pack on any build.
//
// Values: w[r][c] = (code[r][c] - zero[r][g]) * scale[r][g], g = c / group_size, codes
// unsigned in [0, 2^bits). The device stores per (row, group) one half2 {scale, offset}
// with offset = -zero * scale, and computes w = code * scale + offset in half precision
// (one fused multiply-add: the reference CudaQuantDequantizeRow reproduces it).
//
// Codes: row-major, each row a sequence of 16-byte chunks (int4: 32 columns, int8: 16
// columns). Inside a chunk, 32-bit word t (t = 0..3) holds exactly the codes lane t of a
// quad needs for an mma.sync m16n8k16 B fragment, so the same bytes serve the GEMV
// (one 128-bit load per chunk) and the tensor-core path (one 32-bit word per thread):
//   int4, word t, nibble j (j=0..3) / j+4 hold the column pair P_j = (p, p+1) with
//         p = 2t, 2t+8, 16+2t, 24+2t for j = 0..3  (the {0x000F000F << 4j} extraction).
//   int8, word t, bytes (0,1) hold columns (2t, 2t+1), bytes (2,3) columns (2t+8, 2t+9).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace compressd::kernels {

inline constexpr int kCudaQuantChunkBytes = 16;

// Plain description of a quantized matrix, one code per byte (what a quantizer emits).
struct PlainQuantMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  int32_t group_size = 128;         // multiple of 32, divides cols
  int32_t bits = 4;                 // 4 or 8
  const uint8_t* codes = nullptr;   // [rows][cols], each < 2^bits
  const float* scales = nullptr;    // [rows][cols / group_size]
  const float* zeros = nullptr;     // [rows][cols / group_size]; null = 2^(bits-1)
  // Alternative to zeros: the value of code 0 per group ("min", the CPU group formats'
  // GroupScale::m), stored as the offset directly. Takes precedence over zeros.
  const float* mins = nullptr;      // [rows][cols / group_size]
};

// Device-ready bytes (host memory; upload as is).
struct CudaQuantWeight {
  int64_t rows = 0;
  int64_t cols = 0;
  int32_t group_size = 0;
  int32_t bits = 0;
  std::vector<uint8_t> codes;          // rows * cols * bits / 8 bytes, chunked as above
  std::vector<uint16_t> scale_offset;  // [rows][cols/group][2] fp16 bits {scale, offset}
};

// Columns per 16-byte chunk.
constexpr int CudaQuantChunkCols(int bits) { return kCudaQuantChunkBytes * 8 / bits; }

// Empty string when `m` can be repacked, else why not (names the field).
std::string CudaQuantCheck(const PlainQuantMatrix& m);

// Repacks into the device layout; CHECK-fails on an invalid matrix (call CudaQuantCheck).
CudaQuantWeight CudaQuantRepack(const PlainQuantMatrix& m);

// Code of (r, c) read back from the packed bytes (tests, debugging).
uint32_t CudaQuantCode(const CudaQuantWeight& w, int64_t r, int64_t c);

// Scalar reference of the device's values: row r of W as fp32, exactly as the kernels
// dequantize it (fp16 fma of code, scale, offset).
void CudaQuantDequantizeRow(const CudaQuantWeight& w, int64_t r, float* out);

}  // namespace compressd::kernels
