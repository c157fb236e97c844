#include "kernels/cpu_features.h"

#include <atomic>
#include <cpuid.h>
#include <cstdlib>
#include <cstring>

#include "kernels/types.h"

namespace compressd::kernels {
namespace {

uint64_t Xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool fma = (c >> 12) & 1;
  const bool f16c = (c >> 29) & 1;
  if (!osxsave) return f;
  const uint64_t xcr0 = Xgetbv0();
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;
  const bool zmm_ok = (xcr0 & 0xe6) == 0xe6;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned b7 = b, c7 = c;
  __cpuid_count(7, 1, a, b, c, d);
  const unsigned a71 = a;
  if (ymm_ok) {
    f.avx2 = (b7 >> 5) & 1;
    f.fma = fma;
    f.f16c = f16c;
    f.avxvnni = (a71 >> 4) & 1;
  }
  if (zmm_ok) {
    f.avx512f = (b7 >> 16) & 1;
    f.avx512dq = (b7 >> 17) & 1;
    f.avx512bw = (b7 >> 30) & 1;
    f.avx512vl = (b7 >> 31) & 1;
    f.avx512vnni = (c7 >> 11) & 1;
    f.avx512bf16 = (a71 >> 5) & 1;
  }
  return f;
}

CpuIsa EnvCap() {
  const char* e = std::getenv("COMPRESSD_CPU_ISA");
  if (e == nullptr) return CpuIsa::kAvx512;
  if (std::strcmp(e, "scalar") == 0) return CpuIsa::kScalar;
  if (std::strcmp(e, "avx2") == 0) return CpuIsa::kAvx2;
  return CpuIsa::kAvx512;
}

std::atomic<int> g_cap{static_cast<int>(CpuIsa::kAvx512)};

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures f = Detect();
  return f;
}

bool VnniActive() { return ActiveIsa() == CpuIsa::kAvx512 && GetCpuFeatures().avx512vnni; }

CpuIsa ActiveIsa() {
  static const CpuIsa env_cap = EnvCap();
  const CpuFeatures& f = GetCpuFeatures();
  CpuIsa best = CpuIsa::kScalar;
  if (f.avx2 && f.fma && f.f16c) best = CpuIsa::kAvx2;
  if (best == CpuIsa::kAvx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) {
    best = CpuIsa::kAvx512;
  }
  int cap = g_cap.load(std::memory_order_relaxed);
  if (static_cast<int>(env_cap) < cap) cap = static_cast<int>(env_cap);
  if (static_cast<int>(best) > cap) best = static_cast<CpuIsa>(cap);
  return best;
}

void SetIsaCap(CpuIsa cap) { g_cap.store(static_cast<int>(cap), std::memory_order_relaxed); }

const char* IsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar: return "scalar";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kF64: return "F64";
    case DType::kI16: return "I16";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

}  // namespace compressd::kernels
