// `aji info`: what this build is and what it can use (handy in bug reports); with
// --model DIR, what a model directory holds, without loading the weights: the config, the
// parameter count, and for aji checkpoints the training step, tokens seen, the last
// losses (trainer_state.json) and the list of checkpoints of the run. Reads the layout
// train/checkpoint.h describes; writes nothing.
#include <cmath>
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/json_number.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/kernels/backend.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct InfoArgs {
  std::string model;
  bool json = false;
};

json read_json(const fs::path& p) {
  try {
    return json::parse(aji::read_file(p));
  } catch (const json::exception& e) {
    throw aji::Error(std::string("not valid JSON: ") + e.what()).at(p.string()).fix("restore the file from a backup");
  }
}

// A number from trainer_state.json's metrics, or null (NaN is written as null).
json metric(const json& state, const char* key) {
  if (!state.contains("metrics") || !state["metrics"].contains(key)) return nullptr;
  const json& v = state["metrics"][key];
  return v.is_number() && std::isfinite(v.get<double>()) ? v : json(nullptr);
}

std::string show(const json& v, const char* fmt) {
  if (!v.is_number()) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v.get<double>());
  return buf;
}

// The run directory a checkpoint belongs to: the --model dir itself when it is a run
// dir, else the checkpoint's parent when that holds `latest` or ckpt-* directories.
fs::path find_run_dir(const fs::path& given, const fs::path& resolved) {
  std::error_code ec;
  if (!fs::equivalent(given, resolved, ec)) return given;
  fs::path abs = fs::absolute(resolved).lexically_normal();
  if (abs.filename().empty()) abs = abs.parent_path();
  const fs::path parent = abs.parent_path();
  if (abs.filename().string().rfind("ckpt-", 0) == 0 &&
      (fs::exists(parent / "latest") || !aji::train::list_checkpoints(parent).empty()))
    return parent;
  return {};
}

void print_build_info() {
  std::printf("aji %s\n", AJI_VERSION);
  std::printf("threads: %d (hardware %d; set with --threads or AJI_THREADS)\n", aji::num_threads(),
              aji::hardware_threads());
#if defined(__AVX512F__)
  std::printf("isa: avx512\n");
#elif defined(__AVX2__)
  std::printf("isa: avx2+fma (x86-64-v3)\n");
#else
  std::printf("isa: baseline\n");
#endif
  // GPUs: the CUDA plugin's view (kernels/backend.h), or why there is none.
  try {
    auto gpu = aji::kernels::make_backend(aji::kernels::parse_device("cuda"));
    std::printf("cuda: %s\n", gpu->describe().c_str());
  } catch (const std::exception& e) {
    std::printf("cuda: none (%s)\n", e.what());
  }
}

void run_info(const InfoArgs& a) {
  if (a.model.empty()) {
    if (a.json) throw aji::Error("--json describes a model").fix("add --model DIR");
    print_build_info();
    return;
  }
  const fs::path given = a.model;
  const fs::path dir = aji::train::resolve_model_dir(given);
  const aji::model::ModelConfig cfg = aji::train::load_model_config(dir);
  const fs::path run = find_run_dir(given, dir);
  json state;
  if (fs::exists(dir / "trainer_state.json")) state = read_json(dir / "trainer_state.json");
  json out = {{"model_dir", dir.string()},
              {"kind", fs::exists(dir / "aji_config.json") ? "aji" : "huggingface"},
              {"config", cfg.to_json()},
              {"params", cfg.num_params()},
              {"tokenizer", nullptr}};
  if (auto t = aji::train::find_tokenizer_file(dir)) out["tokenizer"] = t->string();
  if (!state.is_null()) {
    out["step"] = state.value("step", json(nullptr));
    out["tokens_seen"] = state.value("tokens_seen", json(nullptr));
    out["train_loss"] = metric(state, "train_loss");
    out["val_loss"] = metric(state, "val_loss");
    out["val_bpb"] = metric(state, "val_bpb");
    out["elapsed_s"] = state.value("elapsed_s", json(nullptr));
  }
  if (!run.empty()) {
    out["run_dir"] = run.string();
    json cks = json::array();
    for (const auto& [step, path] : aji::train::list_checkpoints(run)) {
      std::error_code ec;
      json c = {{"step", step}, {"dir", path.string()}, {"current", fs::equivalent(path, dir, ec)}};
      if (fs::exists(path / "trainer_state.json")) {
        const json st = read_json(path / "trainer_state.json");
        c["val_loss"] = metric(st, "val_loss");
        c["tokens_seen"] = st.value("tokens_seen", json(nullptr));
      }
      c["weights_only"] = !fs::exists(path / "optimizer.bin");
      cks.push_back(c);
    }
    out["checkpoints"] = cks;
  }
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model:      %s (%s)\n", dir.string().c_str(), out["kind"].get<std::string>().c_str());
  std::printf("config:     %s, %d layers, d_model %d, %d heads (%d kv), head size %d, d_ff %d, vocab %d, context %d%s%s\n",
              aji::model::arch_name(cfg.arch), cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.hd(),
              cfg.ff(), cfg.vocab_size, cfg.max_seq_len, cfg.tied_embeddings ? ", tied embeddings" : "",
              cfg.qk_norm ? ", QK-norm" : "");
  std::printf("parameters: %lld (%.2fM)\n", (long long)cfg.num_params(), cfg.num_params() / 1e6);
  std::printf("tokenizer:  %s\n", out["tokenizer"].is_null() ? "none in this directory"
                                                              : out["tokenizer"].get<std::string>().c_str());
  if (!state.is_null()) {
    std::printf("step:       %s\n", show(out["step"], "%.0f").c_str());
    std::printf("tokens:     %s seen\n", show(out["tokens_seen"], "%.0f").c_str());
    std::printf("losses:     train %s | val %s | val bits/byte %s\n", show(out["train_loss"], "%.4f").c_str(),
                show(out["val_loss"], "%.4f").c_str(), show(out["val_bpb"], "%.4f").c_str());
  } else {
    std::printf("training:   no trainer_state.json (not an aji training checkpoint)\n");
  }
  if (out.contains("checkpoints")) {
    std::printf("run:        %s, %zu checkpoint%s\n", run.string().c_str(), out["checkpoints"].size(),
                out["checkpoints"].size() == 1 ? "" : "s");
    std::printf("  %10s %14s %10s  %s\n", "step", "tokens seen", "val loss", "dir");
    for (const auto& c : out["checkpoints"])
      std::printf("  %10lld %14s %10s  %s%s%s\n", (long long)aji::json_int<int64_t>(c["step"], "a checkpoint's step"),
                  show(c.value("tokens_seen", json(nullptr)), "%.0f").c_str(),
                  show(c.value("val_loss", json(nullptr)), "%.4f").c_str(), c["dir"].get<std::string>().c_str(),
                  c["current"].get<bool>() ? "  <- shown above" : "",
                  c["weights_only"].get<bool>() ? "  (weights only)" : "");
  }
}

aji::cli::CommandRegistrar reg(1000, [](CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info",
                                     "The build, threads and CPU features aji will use; with --model, what a model "
                                     "directory holds: config, parameters, step, tokens seen, losses, checkpoints");
  cmd->footer("Example: aji info --model runs/tiny   (a run dir, a RUN/ckpt-N dir or a Hugging Face model dir)");
  cmd->add_option("--model", a->model, "Model: aji run dir, checkpoint dir or Hugging Face model dir");
  cmd->add_flag("--json", a->json, "One JSON object instead of the table");
  cmd->callback([a] { run_info(*a); });
});

}  // namespace
