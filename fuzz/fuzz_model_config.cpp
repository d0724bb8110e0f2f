// Model configs: aji's own config JSON and Hugging Face config.json (GPT-2, Llama,
// Qwen3), through ModelConfig::load as `--config` and model directories use it. A config
// that loads must validate and survive a to_json/from_json round trip.
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "aji/model/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using aji::model::ModelConfig;
  const auto path = aji::fuzz::write_input("config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  aji::fuzz::run_reader(path, [&] {
    ModelConfig c = ModelConfig::load(path);
    c.validate();
    ModelConfig again = ModelConfig::from_json(c.to_json());
    if (again.to_json() != c.to_json()) std::abort();
    ModelConfig hf = ModelConfig::from_hf_config_json(c.to_hf_config_json());
    hf.validate();
  });
  return 0;
}
