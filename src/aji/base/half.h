// IEEE half precision (f16) and bfloat16 <-> float: round to nearest even, NaN stays NaN,
// subnormals and infinities exact. One implementation for every file format that stores
// them (safetensors reading, GGUF writing and reading).
#pragma once

#include <cstdint>

namespace aji {

uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t b);

}  // namespace aji
