// safetensors files (model.safetensors of aji checkpoints and Hugging Face model dirs):
// the 8-byte header length, the JSON header, offsets, dtypes and shapes. A file that
// loads must have every tensor's data size equal to its shape's product.
#include <cstdlib>

#include "aji/train/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::train;
  const auto path =
      aji::fuzz::write_input("model.safetensors", std::string_view(reinterpret_cast<const char*>(data), size));
  aji::fuzz::run_reader(path, [&] {
    SafeTensorsFile f = SafeTensorsFile::load(path);
    for (const auto& [name, t] : f.tensors) {
      if (t.numel() < 0 || static_cast<size_t>(t.numel()) != t.data.size()) std::abort();
      (void)name;
    }
  });
  return 0;
}
