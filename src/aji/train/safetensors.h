// safetensors (https://github.com/huggingface/safetensors), the weights format that
// Hugging Face `transformers` reads and writes:
//
//   8 bytes   N, little-endian uint64: length of the JSON header
//   N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//                    ..., "__metadata__": {"k": "v"}}  (padded with spaces)
//   ...       the byte buffer; offsets are relative to its start
//
// aji writes F32 (tensors in the order given, header padded to 8 bytes) and reads F32,
// F16 and BF16 (converted to F32). A truncated file, offsets outside the buffer, or a
// size that disagrees with dtype*shape is an aji::Error naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "aji/base/half.h"

namespace aji::train {

struct SafeTensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // F32, shape's product elements
};

void save_safetensors(const std::filesystem::path& path, const std::vector<SafeTensorView>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafeTensor {
  std::string dtype;  // as stored: F32, F16, BF16
  std::vector<int64_t> shape;
  std::vector<float> data;  // converted to F32
  int64_t numel() const;
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
  // Reads and converts every tensor. Throws aji::Error on any malformation.
  static SafeTensorsFile load(const std::filesystem::path& path);
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Half-precision reads (base/half.h).
using ::aji::bf16_to_f32;
using ::aji::f16_to_f32;

}  // namespace aji::train
