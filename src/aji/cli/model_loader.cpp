#include "aji/cli/model_loader.h"

#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/train/checkpoint.h"

namespace aji::cli {

namespace fs = std::filesystem;

LoadedModel load_model_for_inference(const ModelArgs& a) {
  const std::shared_ptr<kernels::Backend> device = open_inference_device(a.device, a.weights, a.kv_cache);
  fs::path dir;
  model::Model model = train::load_model(a.model, &dir);
  const fs::path tok_path = train::require_tokenizer_file(dir, a.tokenizer);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  if (tok.vocab_size() > static_cast<size_t>(model.config().vocab_size))
    throw Error("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                std::to_string(model.config().vocab_size))
        .at(tok_path.string())
        .fix("use the tokenizer that was trained with this model");
  std::optional<int32_t> bos;
  std::vector<int32_t> stops;
  const auto eot = tok.special_id("<|endoftext|>");
  if (model.config().bos_token_id >= 0)
    bos = model.config().bos_token_id;
  else if (eot)
    bos = static_cast<int32_t>(*eot);
  if (model.config().eos_token_id >= 0) stops.push_back(model.config().eos_token_id);
  if (eot) stops.push_back(static_cast<int32_t>(*eot));
  if (a.no_bos) bos.reset();
  apply_weights(model, a.weights, a.keep_fp32);
  apply_kv_cache(model, a.kv_cache);
  if (device) model.set_device(device);
  return {std::move(model), std::move(tok), bos, stops};
}

void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device,
                  "cpu, cuda or cuda:N: where the model runs (the CUDA backend is not yet verified on a GPU; fp32 "
                  "weights and KV cache: docs/cuda.md)")
      ->capture_default_str();
}

std::shared_ptr<kernels::Backend> open_inference_device(const std::string& device, const std::string& weights,
                                                        const std::string& kv_cache) {
  const kernels::DeviceSpec spec = kernels::parse_device(device);
  if (spec.host()) return nullptr;
  if (weights != "fp32" && weights != "f32")
    throw Error("--weights " + weights + " is not built for --device " + device + " yet")
        .fix("use --weights fp32 on the GPU, or drop --device (docs/cuda.md)");
  if (kv_cache != "fp32" && kv_cache != "f32")
    throw Error("--kv-cache " + kv_cache + " is not built for --device " + device + " yet")
        .fix("use --kv-cache fp32 on the GPU, or drop --device (docs/cuda.md)");
  return kernels::make_backend(spec);
}

std::vector<int32_t> encode_text(const LoadedModel& l, const std::string& text) {
  std::vector<int32_t> ids;
  if (l.bos) ids.push_back(*l.bos);
  for (auto id : l.tok.encode(text, tokenizer::SpecialPolicy::kAsText)) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

void add_model_options(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--model", a.model, "Model: aji run dir, checkpoint dir (RUN/ckpt-N) or Hugging Face model dir")
      ->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer file (default: the one in the model directory)");
  cmd->add_flag("--no-bos", a.no_bos, "Do not start the text with the model's <|endoftext|> / BOS token");
}

void add_weights_option(CLI::App* cmd, std::string& weights) {
  cmd->add_option("--weights", weights,
                  "Weight type for generation: fp32 (exact), bf16, or q8_0 (8-bit, blocks of 32 with an fp16 "
                  "scale, as llama.cpp's Q8_0); smaller weights decode faster")
      ->check(CLI::IsMember({"fp32", "bf16", "q8_0"}))
      ->default_str("fp32");
}

void add_kv_cache_option(CLI::App* cmd, std::string& kv_cache) {
  cmd->add_option("--kv-cache", kv_cache,
                  "KV cache element type: fp32 (exact) or bf16 (half the bytes each decode step reads; keys and "
                  "values rounded once as they are stored, as llama.cpp's default f16 cache rounds them)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->default_str("fp32");
}

void apply_kv_cache(model::Model& model, const std::string& kv_cache) {
  model.set_kv_cache(model::parse_kv_cache_type(kv_cache, "--kv-cache"));
}

namespace {
double rss_mib() {  // resident set size now, from /proc/self/statm (0 where there is none)
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0.0;
  long pages = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return got == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1048576.0) : 0.0;
}
}  // namespace

void apply_weights(model::Model& model, const std::string& weights, bool keep_fp32) {
  const auto type = kernels::cpu::parse_weight_type(weights, "--weights");
  if (type == kernels::cpu::WeightType::kF32) return;
  const double rss0 = rss_mib();
  const model::Model::WeightsReport r = model.use_weights(type, !keep_fp32);
  if (global_options().quiet) return;
  const double mb = 1.0 / (1 << 20);
  std::fprintf(stderr, "weights: %s for %d matrices (%.1f MiB, %s kernels)", weights.c_str(), r.packed,
               r.packed_bytes * mb, kernels::cpu::packed_kernel_isa(type));
  if (r.fp32_bytes_freed)
    std::fprintf(stderr, "; their fp32 copies freed (%.1f MiB; RSS %.0f -> %.0f MiB)", r.fp32_bytes_freed * mb, rss0,
                 rss_mib());
  std::fprintf(stderr, "\n");
  if (!r.kept_fp32.empty())
    std::fprintf(stderr, "weights: %zu matrices kept in fp32, their input width is not a multiple of 32 (first: %s)\n",
                 r.kept_fp32.size(), r.kept_fp32.front().c_str());
}

}  // namespace aji::cli
