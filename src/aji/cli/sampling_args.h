// What `aji generate` and `aji chat` share: the sampling options, checked before the
// model is loaded (a NaN or out-of-range value is an error naming the flag), and the
// seed, drawn at random and printed when not given so that a run can be repeated.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>

#include "aji/base/error.h"
#include "aji/infer/generate.h"
#include "aji/infer/sampler.h"

namespace aji::cli {

struct SamplingArgs {
  std::optional<uint64_t> seed;

  void add_to(CLI::App* cmd, infer::GenerateOptions& g) {
    cmd->add_option("--max-tokens", g.max_tokens, "Tokens to generate at most (per reply in chat)")
        ->capture_default_str();
    cmd->add_option("--temperature", g.sampling.temperature, "Sampling temperature, finite >= 0 (0 = greedy)")
        ->capture_default_str();
    cmd->add_option("--top-k", g.sampling.top_k, "Sample among the K most likely tokens (0 = all)")
        ->capture_default_str();
    cmd->add_option("--top-p", g.sampling.top_p, "Nucleus sampling: the smallest set with this much probability, (0, 1]")
        ->capture_default_str();
    cmd->add_option("--min-p", g.sampling.min_p, "Drop tokens less likely than MIN_P times the most likely one, [0, 1]")
        ->capture_default_str();
    cmd->add_option("--repetition-penalty", g.sampling.repetition_penalty,
                    "Divide positive / multiply negative logits of tokens already in the context (1 = off; 1.1 is mild)")
        ->capture_default_str();
    cmd->add_option("--repeat-window", g.sampling.repetition_window,
                    "The repetition penalty looks at the last N tokens only (0 = the whole context)")
        ->capture_default_str();
    cmd->add_option("--seed", seed, "Random seed (default: a random one, printed so the run can be repeated)");
  }

  // Throws aji::Error for a value out of range; fills g.seed (drawing one if not given).
  // *announce: a seed was drawn and it matters (not greedy), so the caller prints it.
  void finish(infer::GenerateOptions& g, bool* announce) const {
    infer::check_sampling_params(g.sampling);
    if (g.max_tokens < 0)
      throw Error("--max-tokens " + std::to_string(g.max_tokens) + " is negative").fix("use a count >= 0, e.g. 128");
    *announce = !seed.has_value() && g.sampling.temperature > 0.0f && g.sampling.top_k != 1;
    if (seed) {
      g.seed = *seed;
    } else {
      std::random_device rd;
      g.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    }
  }
};

}  // namespace aji::cli
