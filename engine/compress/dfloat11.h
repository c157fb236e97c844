// On-load packing of one linear layer into the lossless DFloat11-style format "df11"
// (kernels/dfloat11.h): bf16 weights are kept bit for bit; fp32/fp16 weights are rounded to
// bf16 first (lossless with respect to those bf16 values). Pure function; any thread.
#pragma once

#include <string>

#include "engine/compress/linear.h"
#include "kernels/dfloat11.h"

namespace compressd {

inline constexpr char kDf11FormatName[] = "df11";

// True for the format names routed here ("df11").
bool IsDf11FormatName(const std::string& format);

// w: [rows][cols] plain F32/F16/BF16 (or GGUF block) tensor. INVALID_ARGUMENT naming the
// tensor when it is not a matrix.
absl::StatusOr<Linear> CompressDf11(const TensorView& w);

// A Linear owning a packed df11 weight.
Linear LinearFromDf11(kernels::Df11Packed p);

}  // namespace compressd
