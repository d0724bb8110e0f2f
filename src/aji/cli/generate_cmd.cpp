// `aji generate` (streaming text generation with the KV cache) and `aji score`
// (per-token log-probabilities of a text), for any --model DIR: an aji run or checkpoint
// directory, or a Hugging Face GPT-2 / Llama directory.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <iostream>
#include <optional>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/cli/sampling_args.h"
#include "aji/infer/generate.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

using aji::cli::ModelArgs;
using Loaded = aji::cli::LoadedModel;
using aji::cli::add_model_options;

Loaded load(const ModelArgs& a) { return aji::cli::load_model_for_inference(a); }
std::vector<int32_t> encode(const Loaded& l, const std::string& text) { return aji::cli::encode_text(l, text); }

struct GenerateArgs {
  ModelArgs m;
  std::string prompt;
  std::string prompt_file;
  std::vector<std::string> stops;
  aji::infer::GenerateOptions g;
  aji::cli::SamplingArgs sampling;
  bool no_cache = false;
  bool stats = false;
  bool prompt_given = false;
};

// --stop "\n\n": the escapes a shell makes awkward to type.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == '\\')) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1] == 't' ? '\t' : '\\';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

// --prompt, --prompt-file FILE ("-" = stdin), or stdin when it is not a terminal.
std::string read_prompt(const GenerateArgs& a) {
  if (a.prompt_given && !a.prompt_file.empty())
    throw aji::Error("both --prompt and --prompt-file were given").fix("give the prompt one way only");
  if (a.prompt_given) return a.prompt;
  if (!a.prompt_file.empty() && a.prompt_file != "-") return aji::read_file(a.prompt_file);
  if (a.prompt_file.empty() && isatty(STDIN_FILENO))
    throw aji::Error("no prompt").fix("give --prompt TEXT or --prompt-file FILE, or pipe the prompt on stdin");
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

void run_generate(GenerateArgs& a) {
  bool announce_seed = false;
  a.sampling.finish(a.g, &announce_seed);  // bad sampling options fail before the model loads
  const std::string text = read_prompt(a);
  const bool quiet = aji::cli::global_options().quiet;
  if (a.no_cache && a.m.weights != "fp32")
    throw aji::Error("--no-cache recomputes every step with the full-sequence forward, which runs on fp32 weights")
        .fix("drop --weights " + a.m.weights + " (or --no-cache)");
  Loaded l = load(a.m);
  std::vector<int32_t> prompt = encode(l, text);
  a.g.stop_tokens = l.stop_tokens;
  if (announce_seed && !quiet)
    std::fprintf(stderr, "seed %llu (repeat this text with --seed %llu)\n", (unsigned long long)a.g.seed,
                 (unsigned long long)a.g.seed);
  aji::infer::Utf8Streamer utf8;
  std::vector<std::string> stop_strings;
  for (const auto& st : a.stops) stop_strings.push_back(unescape(st));
  aji::infer::StopStrings stops(stop_strings);
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  int produced = 0;
  auto emit = [](const std::string& s) {
    std::fputs(s.c_str(), stdout);
    std::fflush(stdout);
  };
  auto on_token = [&](int32_t id) {
    ++produced;
    for (int32_t s : l.stop_tokens)
      if (id == s) return true;  // the end-of-text token itself is not printed
    emit(stops.push(utf8.push(l.tok.token_bytes(static_cast<aji::tokenizer::TokenId>(id)))));
    return !stops.stopped();
  };
  const auto t0 = std::chrono::steady_clock::now();
  aji::infer::StopReason why{};
  if (a.no_cache)
    aji::infer::generate_recompute(l.model, prompt, a.g, on_token, &why);
  else
    aji::infer::generate(l.model, prompt, a.g, on_token, &why);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  emit(stops.push(utf8.flush()));
  emit(stops.flush());
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (!quiet) {
    if (why == aji::infer::StopReason::kStopToken)
      std::fprintf(stderr, "[end of text after %d tokens]\n", produced);
    else if (why == aji::infer::StopReason::kContextLimit)
      std::fprintf(stderr, "[stopped at the model's context limit of %d tokens (%zu prompt + %d generated)]\n",
                   l.model.config().max_seq_len, prompt.size(), produced);
    else if (stops.stopped())
      std::fprintf(stderr, "[stopped at --stop \"%s\" after %d tokens]\n", stops.which().c_str(), produced);
  }
  if (a.stats)
    std::fprintf(stderr, "%zu prompt tokens, %d generated in %.2fs (%.1f tokens/s)\n", prompt.size(), produced, s,
                 produced / s);
}

struct ScoreArgs {
  ModelArgs m;
  std::string input;
  bool json = false;
  bool per_token = false;
};

void run_score(const ScoreArgs& a) {
  Loaded l = load(a.m);
  const std::string text = aji::read_file(a.input);
  std::vector<int32_t> ids = encode(l, text);
  if (ids.size() < 2)
    throw aji::Error("the input is too short to score (fewer than two tokens)").at(a.input).fix("give a longer text");
  auto r = aji::infer::score_tokens(l.model, ids, text.size());
  if (a.json) {
    nlohmann::json j = {{"model", a.m.model},
                        {"input", a.input},
                        {"tokens", r.tokens},
                        {"logprobs", r.logprobs},
                        {"bos", l.bos.has_value()},
                        {"num_scored", r.logprobs.size()},
                        {"total_nll", r.total_nll},
                        {"loss", r.mean_loss},
                        {"perplexity", r.perplexity},
                        {"bytes", r.bytes},
                        {"bits_per_byte", r.bits_per_byte}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  if (a.per_token) {
    std::printf("%8s %8s %10s  %s\n", "pos", "id", "logprob", "token");
    for (size_t i = 0; i < r.logprobs.size(); ++i) {
      std::string t(l.tok.token_bytes(static_cast<aji::tokenizer::TokenId>(r.tokens[i + 1])));
      for (char& c : t)
        if (c == '\n') c = ' ';
      std::printf("%8zu %8d %10.4f  %s\n", i + 1, r.tokens[i + 1], r.logprobs[i], t.c_str());
    }
  }
  std::printf("tokens scored: %zu | bytes: %llu | loss %.4f nats/token | perplexity %.3f | bits/byte %.4f\n",
              r.logprobs.size(), (unsigned long long)r.bytes, r.mean_loss, r.perplexity, r.bits_per_byte);
}

aji::cli::CommandRegistrar reg(60, [](CLI::App& app) {
  auto ga = std::make_shared<GenerateArgs>();
  ga->g.sampling = {0.8f, 50, 1.0f};
  CLI::App* gen = app.add_subcommand("generate", "Continue a prompt with a model, streaming tokens as they come");
  gen->footer("Example: aji generate --model runs/tiny --prompt \"Once upon a time\" --max-tokens 100 --stop \"\\n\\n\"\n"
              "The prompt may also come from --prompt-file FILE or stdin. Notes (the seed, why it stopped) go to "
              "stderr.");
  add_model_options(gen, ga->m);
  aji::cli::add_weights_option(gen, ga->m.weights);
  aji::cli::add_kv_cache_option(gen, ga->m.kv_cache);
  aji::cli::add_device_option(gen, ga->m.device);
  CLI::Option* prompt_opt = gen->add_option("--prompt", ga->prompt, "Text to continue");
  gen->add_option("--prompt-file", ga->prompt_file, "Read the text to continue from a file (- = stdin)");
  gen->add_option("--stop", ga->stops,
                  "Stop when the output contains this string, which is not printed (repeatable; \\n, \\t and "
                  "\\\\ are read as newline, tab and backslash)");
  ga->sampling.add_to(gen, ga->g);
  gen->add_flag("--no-cache", ga->no_cache, "Recompute the whole sequence every step (slow; for checking)");
  gen->add_flag("--stats", ga->stats, "Print tokens/s to stderr");
  gen->callback([ga, prompt_opt] {
    ga->prompt_given = prompt_opt->count() > 0;
    run_generate(*ga);
  });

  auto sa = std::make_shared<ScoreArgs>();
  CLI::App* score = app.add_subcommand(
      "score", "Per-token log-probabilities, loss, perplexity and bits per byte of a text under a model");
  score->footer("Example: aji score --model runs/tiny --input data/corpus/heldout/en_news_dev.txt --json");
  add_model_options(score, sa->m);
  aji::cli::add_device_option(score, sa->m.device);
  score->add_option("--input", sa->input, "Text file to score")->required();
  score->add_flag("--json", sa->json, "One JSON object: tokens, logprobs (one per token after the first), totals");
  score->add_flag("--per-token", sa->per_token, "Also print each token's log-probability");
  score->callback([sa] { run_score(*sa); });
});

}  // namespace
