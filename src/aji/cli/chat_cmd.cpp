// `aji chat`: talk to an instruct model. Interactive (lines from stdin, TTY or not) with
// /reset, /system TEXT, /help, /quit; or scripted with --prompt (repeatable), one reply
// per prompt on stdout.
#include <cstdio>
#include <iostream>
#include <memory>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/infer/chat.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct ChatArgs {
  std::string model;
  std::string tokenizer;
  std::string system;
  std::vector<std::string> prompts;
  bool transcript = false;  // --prompt mode: print "user: ..." / "assistant: ..." lines
  aji::infer::GenerateOptions g;
};

void print_piece(const std::string& s) {
  std::fputs(s.c_str(), stdout);
  std::fflush(stdout);
}

void run_chat(ChatArgs& a) {
  fs::path dir;
  aji::model::Model model = aji::train::load_model(a.model, &dir);
  const fs::path tok_path = aji::train::require_tokenizer_file(dir, a.tokenizer);
  aji::tokenizer::Tokenizer tok = aji::tokenizer::Tokenizer::load(tok_path);
  aji::infer::ChatSession chat(model, tok, a.g);
  chat.set_system(a.system);
  auto turn = [&](const std::string& line) {
    int dropped = 0;
    if (a.transcript) std::printf("user: %s\nassistant: ", line.c_str());
    chat.reply(line, print_piece, &dropped);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (dropped > 0)
      std::fprintf(stderr, "(the history was too long for the context: dropped the %d oldest messages)\n", dropped);
  };
  if (!a.prompts.empty()) {
    for (const auto& p : a.prompts) turn(p);
    return;
  }
  std::fprintf(stderr, "aji chat: type a message; /help for commands, /quit or EOF to end\n");
  std::string line;
  while (true) {
    std::fputs("> ", stderr);
    std::fflush(stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/help") {
      std::fprintf(stderr, "/reset  forget the conversation (keeps the system message)\n"
                           "/system TEXT  set the system message (and reset)\n/quit  end (or EOF)\n");
      continue;
    }
    if (line == "/reset") {
      chat.reset();
      std::fprintf(stderr, "(history cleared)\n");
      continue;
    }
    if (line.rfind("/system", 0) == 0 && (line.size() == 7 || line[7] == ' ')) {
      chat.set_system(line.size() > 8 ? line.substr(8) : "");
      chat.reset();
      std::fprintf(stderr, "(system message set; history cleared)\n");
      continue;
    }
    try {
      turn(line);
    } catch (const aji::Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
}

aji::cli::CommandRegistrar reg(61, [](CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  a->g.sampling = {0.7f, 50, 0.9f};
  a->g.max_tokens = 256;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with an instruct (SFT) model: interactive, or --prompt for scripts");
  cmd->footer("Example: aji chat --model runs/sft --prompt \"Hello!\" --prompt \"And in Korean?\"");
  cmd->add_option("--model", a->model, "Model: aji run dir, checkpoint dir or Hugging Face model dir")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer file (default: the one in the model directory)");
  cmd->add_option("--system", a->system, "System message");
  cmd->add_option("--prompt", a->prompts, "A user message; print one reply and exit (repeat for several turns)");
  cmd->add_flag("--transcript", a->transcript, "With --prompt: print each user message before its reply");
  cmd->add_option("--max-tokens", a->g.max_tokens, "Reply tokens at most")->capture_default_str();
  cmd->add_option("--temperature", a->g.sampling.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-k", a->g.sampling.top_k, "Sample among the K most likely tokens (0 = all)")
      ->capture_default_str();
  cmd->add_option("--top-p", a->g.sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", a->g.seed, "Random seed")->capture_default_str();
  cmd->callback([a] { run_chat(*a); });
});

}  // namespace
