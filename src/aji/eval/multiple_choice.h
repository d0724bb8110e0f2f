// Scoring multiple-choice items from log-probabilities (post-training spec §7.1–7.2,
// unit checks 27–28): the parts of few-shot evaluation that do not need a model.
//   kSum      lm-eval "acc": argmax of Σ log p(continuation tokens | context)
//   kPerChar  lm-eval "acc_norm": Σ log p / number of characters (bytes) of the choice text
//   kPerToken nanochat CORE: mean log p over the continuation tokens
// Ties go to the first choice. Centered accuracy (acc − b) / (1 − b) puts random guessing
// (b = 1/choices) at 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace aji::eval {

enum class McScoring { kSum, kPerChar, kPerToken };

struct ChoiceScore {
  double sum_logprob = 0;  // Σ log p over the continuation tokens
  int64_t n_tokens = 0;    // continuation tokens
  int64_t n_chars = 0;     // bytes of the continuation text (acc_norm's length)
};

double choice_value(const ChoiceScore& s, McScoring scoring);
// Index of the best choice; aji::Error for an empty list or a choice with no tokens.
int pick_choice(const std::vector<ChoiceScore>& choices, McScoring scoring);
// (acc − baseline) / (1 − baseline); baseline in [0, 1).
double centered_accuracy(double accuracy, double baseline);

// The continuation span when context + choice are tokenised together (lm-eval
// _encode_pair): choices of a multiple-choice item share the context, so the span starts
// after their common token prefix; schema-style items (shared continuation, different
// contexts) end in a common suffix.
size_t common_prefix_length(const std::vector<std::vector<uint32_t>>& sequences);
size_t common_suffix_length(const std::vector<std::vector<uint32_t>>& sequences);

}  // namespace aji::eval
