// `aji chat`: talk to an instruct model. Interactive: line editing and history (libedit)
// on a terminal, plain lines otherwise (scripts, tests); a line ending in `\` continues
// on the next, and a line `"""` opens a block that a second `"""` closes; Ctrl-C stops
// the reply being written, not the session. Commands: /help /system /reset /retry /undo
// /save /quit. Or scripted with --prompt (repeatable), one reply per prompt on stdout.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>

#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/cli/sampling_args.h"
#include "aji/align/chat.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct ChatArgs {
  std::string model;
  std::string tokenizer;
  std::string weights = "fp32";
  std::string kv_cache = "fp32";
  std::string device = "cpu";
  std::string system;
  std::vector<std::string> prompts;
  bool transcript = false;  // --prompt mode: print "user: ..." / "assistant: ..." lines
  aji::infer::GenerateOptions g;
  aji::cli::SamplingArgs sampling;
};

constexpr const char* kCommands =
    "  /system TEXT  set the system message (and clear the conversation); /system alone shows it\n"
    "  /reset        clear the conversation (keeps the system message)\n"
    "  /retry        write the last reply again (a new sample)\n"
    "  /undo         remove the last message and its reply\n"
    "  /save FILE    write the conversation as JSONL ({\"messages\": [...]}, the SFT format)\n"
    "  /help         this list\n"
    "  /quit         end (or Ctrl-D)\n"
    "A line ending in \\ continues on the next; a line \"\"\" starts a block that another \"\"\" ends.\n"
    "A message that starts with / is written //. Ctrl-C stops a reply; at the prompt it ends the session.\n";

// Ctrl-C while a reply is being written: a flag that the token loop polls. Installed
// only around a reply (sigaction, no SA_RESTART), so at the prompt Ctrl-C ends aji.
volatile std::sig_atomic_t g_stop_reply = 0;
extern "C" void on_reply_sigint(int) { g_stop_reply = 1; }

class ReplyInterrupt {
 public:
  ReplyInterrupt() {
    g_stop_reply = 0;
    struct sigaction sa {};
    sa.sa_handler = on_reply_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &previous_);
  }
  ~ReplyInterrupt() { sigaction(SIGINT, &previous_, nullptr); }
  ReplyInterrupt(const ReplyInterrupt&) = delete;
  ReplyInterrupt& operator=(const ReplyInterrupt&) = delete;
  static bool requested() { return g_stop_reply != 0; }

 private:
  struct sigaction previous_ {};
};

// Lines from a terminal through libedit (editing, history kept in ~/.aji_chat_history),
// or plain lines from a pipe or file.
class LineReader {
 public:
  LineReader() : tty_(isatty(STDIN_FILENO) != 0) {
    if (!tty_) return;
    using_history();
    stifle_history(1000);
    if (const char* home = std::getenv("HOME")) {
      history_file_ = (fs::path(home) / ".aji_chat_history").string();
      read_history(history_file_.c_str());
    }
  }
  ~LineReader() {
    if (tty_ && !history_file_.empty()) write_history(history_file_.c_str());
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  std::optional<std::string> read(const char* prompt) {
    std::string line;
    if (tty_) {
      char* raw = readline(prompt);
      if (!raw) return std::nullopt;
      line = raw;
      std::free(raw);
      if (!line.empty()) add_history(line.c_str());
    } else if (!std::getline(std::cin, line)) {
      return std::nullopt;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
  bool tty() const { return tty_; }

 private:
  bool tty_;
  std::string history_file_;
};

// One message: a line, lines joined by a trailing `\`, or a """ block. *block: it came
// from a block (so a leading / is text, not a command). nullopt at the end of input.
std::optional<std::string> read_message(LineReader& in, bool* block) {
  *block = false;
  std::optional<std::string> line = in.read("> ");
  if (!line) return std::nullopt;
  if (*line == "\"\"\"") {
    *block = true;
    std::string text;
    bool first = true;
    while (std::optional<std::string> l = in.read("... ")) {
      if (*l == "\"\"\"") break;
      if (!first) text += '\n';
      text += *l;
      first = false;
    }
    return text;
  }
  std::string text = *line;
  while (!text.empty() && text.back() == '\\') {
    text.back() = '\n';
    std::optional<std::string> l = in.read("... ");
    if (!l) break;
    text += *l;
  }
  return text;
}

void print_piece(const std::string& s) {
  std::fputs(s.c_str(), stdout);
  std::fflush(stdout);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

void run_chat(ChatArgs& a) {
  bool announce_seed = false;
  a.sampling.finish(a.g, &announce_seed);  // bad sampling options fail before the model loads
  const auto device = aji::cli::open_inference_device(a.device, a.weights, a.kv_cache);
  fs::path dir;
  aji::model::Model model = aji::train::load_model(a.model, &dir);
  const fs::path tok_path = aji::train::require_tokenizer_file(dir, a.tokenizer);
  aji::tokenizer::Tokenizer tok = aji::tokenizer::Tokenizer::load(tok_path);
  aji::cli::apply_weights(model, a.weights, false);
  aji::cli::apply_kv_cache(model, a.kv_cache);
  if (device) model.set_device(device);
  aji::align::ChatSession chat(model, tok, a.g);
  chat.set_system(a.system);
  const bool quiet = aji::cli::global_options().quiet;
  if (announce_seed && !quiet)
    std::fprintf(stderr, "seed %llu (repeat these replies with --seed %llu)\n", (unsigned long long)a.g.seed,
                 (unsigned long long)a.g.seed);
  int shown_dropped = 0;
  auto after_reply = [&](int dropped, bool interactive) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (chat.last_stop() == aji::infer::StopReason::kCallback && interactive)
      std::fprintf(stderr, "(stopped)\n");
    else if (chat.last_stop() == aji::infer::StopReason::kMaxTokens)
      std::fprintf(stderr, "(the reply reached --max-tokens %d and was cut)\n", a.g.max_tokens);
    else if (chat.last_stop() == aji::infer::StopReason::kContextLimit)
      std::fprintf(stderr, "(the reply reached the model's context limit and was cut)\n");
    if (dropped > shown_dropped)
      std::fprintf(stderr, "(the conversation is too long for the context: the %d oldest messages are left out)\n",
                   dropped);
    shown_dropped = dropped;
  };
  if (!a.prompts.empty()) {
    for (const auto& p : a.prompts) {
      int dropped = 0;
      if (a.transcript) std::printf("user: %s\nassistant: ", p.c_str());
      chat.reply(p, print_piece, &dropped);
      after_reply(dropped, false);
    }
    return;
  }
  LineReader in;
  if (!quiet) std::fprintf(stderr, "aji chat: type a message; /help for commands, /quit or Ctrl-D to end\n");
  auto stop = [] { return ReplyInterrupt::requested(); };
  bool block = false;
  while (std::optional<std::string> msg = read_message(in, &block)) {
    std::string line = *msg;
    if (trim(line).empty()) continue;
    try {
      if (!block && line[0] == '/' && line.rfind("//", 0) != 0) {
        const size_t sp = line.find(' ');
        const std::string cmd = line.substr(0, sp);
        const std::string arg = sp == std::string::npos ? "" : trim(line.substr(sp + 1));
        if (cmd == "/quit" || cmd == "/exit") break;
        if (cmd == "/help") {
          std::fprintf(stderr, "%s", kCommands);
        } else if (cmd == "/reset") {
          chat.reset();
          shown_dropped = 0;
          std::fprintf(stderr, "(conversation cleared)\n");
        } else if (cmd == "/system" && arg.empty()) {
          const std::string sys = chat.system();
          if (sys.empty())
            std::fprintf(stderr, "(no system message; set one with /system TEXT)\n");
          else
            std::fprintf(stderr, "system: %s\n(change it with /system TEXT)\n", sys.c_str());
        } else if (cmd == "/system") {
          chat.set_system(arg);
          chat.reset();
          shown_dropped = 0;
          std::fprintf(stderr, "(system message set; conversation cleared)\n");
        } else if (cmd == "/retry") {
          int dropped = 0;
          ReplyInterrupt guard;
          chat.retry(print_piece, &dropped, stop);
          after_reply(dropped, true);
        } else if (cmd == "/undo") {
          std::fprintf(stderr, chat.undo() ? "(removed the last message and its reply)\n" : "(nothing to undo)\n");
        } else if (cmd == "/save") {
          if (arg.empty()) throw aji::Error("/save needs a file name").fix("write /save FILE.jsonl");
          chat.save(arg);
          std::fprintf(stderr, "(saved to %s)\n", arg.c_str());
        } else {
          std::fprintf(stderr, "unknown command %s (not sent to the model). Commands:\n%s", cmd.c_str(), kCommands);
        }
        continue;
      }
      if (!block && line.rfind("//", 0) == 0) line.erase(0, 1);
      int dropped = 0;
      ReplyInterrupt guard;
      chat.reply(line, print_piece, &dropped, stop);
      after_reply(dropped, true);
    } catch (const aji::Error& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "%s\n", e.describe().c_str());
    }
  }
}

aji::cli::CommandRegistrar reg(61, [](CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  a->g.sampling = {0.7f, 50, 0.9f};
  a->g.max_tokens = 256;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with an instruct (SFT) model: interactive, or --prompt for scripts");
  cmd->footer(std::string("Example: aji chat --model runs/sft --prompt \"Hello!\" --prompt \"And in Korean?\"\n"
                          "Interactive commands:\n") +
              kCommands);
  cmd->add_option("--model", a->model, "Model: aji run dir, checkpoint dir or Hugging Face model dir")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer file (default: the one in the model directory)");
  aji::cli::add_weights_option(cmd, a->weights);
  aji::cli::add_kv_cache_option(cmd, a->kv_cache);
  aji::cli::add_device_option(cmd, a->device);
  cmd->add_option("--system", a->system, "System message");
  cmd->add_option("--prompt", a->prompts, "A user message; print one reply and exit (repeat for several turns)");
  cmd->add_flag("--transcript", a->transcript, "With --prompt: print each user message before its reply");
  a->sampling.add_to(cmd, a->g);
  cmd->callback([a] { run_chat(*a); });
});

}  // namespace
