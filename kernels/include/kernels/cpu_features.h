// Run-time CPU feature detection. Kernels are chosen by what the CPU reports, never by
// compile flags alone; COMPRESSD_CPU_ISA=scalar|avx2|avx512 caps the choice (tests use it
// to run every path on one machine).
#pragma once

namespace compressd::kernels {

enum class CpuIsa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool avxvnni = false;
};

// Detected once, thread-safe.
const CpuFeatures& GetCpuFeatures();

// Best ISA this CPU supports, capped by COMPRESSD_CPU_ISA and by SetIsaCap().
CpuIsa ActiveIsa();

// The AVX-512 VNNI integer kernels run: ActiveIsa() is kAvx512 and the CPU has VNNI.
bool VnniActive();

// Cap the ISA used from now on (tests; pass kAvx512 to remove the cap).
void SetIsaCap(CpuIsa cap);

const char* IsaName(CpuIsa isa);

}  // namespace compressd::kernels
