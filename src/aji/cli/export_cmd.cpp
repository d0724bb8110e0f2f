// `aji export gguf --model DIR --out FILE.gguf [--type f32|f16|bf16|q8_0]`: the model and its
// tokenizer as one GGUF file for llama.cpp (export/gguf.h). A chat model (an SFT, DPO, PPO
// or GRPO checkpoint) is recognised from its trainer_state.json; --chat / --base override.
#include <cstdio>
#include <memory>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/export/gguf.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct GgufArgs {
  std::string model;
  std::string out;
  std::string type = "f32";
  std::string tokenizer;
  std::string name;
  bool chat = false;
  bool base = false;
  bool allow_approximate = false;
};

void run_gguf(const GgufArgs& a) {
  const auto type = aji::gguf::parse_file_type(a.type);
  if (!type)
    throw aji::Error("unknown --type \"" + a.type + "\"").fix("use one of f32, f16, bf16, q8_0");
  if (a.chat && a.base) throw aji::Error("both --chat and --base were given").fix("give at most one of them");
  if (fs::path(a.out).extension() != ".gguf")
    throw aji::Error("--out " + a.out + " does not end in .gguf").fix("name the output FILE.gguf");
  fs::path dir;
  aji::model::Model model = aji::train::load_model(a.model, &dir);
  const fs::path tok_path = aji::train::require_tokenizer_file(dir, a.tokenizer);
  const aji::tokenizer::Tokenizer tok = aji::tokenizer::Tokenizer::load(tok_path);
  aji::gguf::ExportOptions o;
  o.type = *type;
  o.chat = a.chat || (!a.base && aji::train::is_chat_model_dir(dir));
  o.allow_approximate_pretokenizer = a.allow_approximate;
  fs::path given = fs::absolute(a.model).lexically_normal();
  if (given.filename().empty()) given = given.parent_path();  // "run/" -> "run"
  o.name = a.name.empty() ? given.filename().string() : a.name;
  const aji::gguf::ExportSummary s = aji::gguf::write_gguf(model, tok, a.out, o);
  std::printf("wrote %s: %s %s, %zu tensors, %zu tokens (%zu merges, pre-tokenizer %s), %s model, %.1f MB\n",
              a.out.c_str(), s.architecture.c_str(), std::string(aji::gguf::file_type_name(*type)).c_str(),
              s.n_tensors, s.n_vocab, s.n_merges, s.pre.c_str(), o.chat ? "chat" : "base",
              static_cast<double>(s.file_bytes) / 1e6);
  if (s.unreachable_tokens > 0)
    std::fprintf(stderr,
                 "note: %zu tokens are not reachable by merges; llama.cpp will never produce them (aji's encoder "
                 "can, as whole pre-tokens)\n",
                 s.unreachable_tokens);
  std::printf("run it: llama-cli -m %s%s\n", a.out.c_str(), o.chat ? " -cnv" : " -p \"...\" -n 64 --temp 0");
}

aji::cli::CommandRegistrar reg(95, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(app, "export", "Export a model to other tools' formats (GGUF)");
  auto a = std::make_shared<GgufArgs>();
  CLI::App* cmd = group->add_subcommand("gguf", "Write a GGUF file (llama.cpp, ollama, LM Studio) with the tokenizer inside");
  cmd->add_option("--model", a->model, "Model: aji run dir, checkpoint dir (RUN/ckpt-N) or Hugging Face model dir")
      ->required();
  cmd->add_option("--out", a->out, "Output FILE.gguf (written atomically)")->required();
  cmd->add_option("--type", a->type, "Matrix type: f32, f16, bf16 or q8_0 (norms and biases stay f32)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer file (default: the one in the model directory)");
  cmd->add_option("--name", a->name, "general.name (default: the model directory's name)");
  cmd->add_flag("--chat", a->chat, "Export as a chat model (<|im_end|> ends a turn, chat template) even if not detected");
  cmd->add_flag("--base", a->base, "Export as a base model even if the checkpoint is a chat model");
  cmd->add_flag("--allow-approximate-pretokenizer", a->allow_approximate,
                "Write the nearest llama.cpp pre-tokenizer when none is identical (o200k -> gpt-4o)");
  cmd->callback([a] { run_gguf(*a); });
});

}  // namespace
