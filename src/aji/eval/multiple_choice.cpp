#include "aji/eval/multiple_choice.h"

#include <algorithm>
#include <string>

#include "aji/base/error.h"

namespace aji::eval {

double choice_value(const ChoiceScore& s, McScoring scoring) {
  switch (scoring) {
    case McScoring::kSum: return s.sum_logprob;
    case McScoring::kPerChar: return s.n_chars > 0 ? s.sum_logprob / double(s.n_chars) : s.sum_logprob;
    case McScoring::kPerToken: return s.sum_logprob / double(s.n_tokens);
  }
  return s.sum_logprob;
}

int pick_choice(const std::vector<ChoiceScore>& choices, McScoring scoring) {
  if (choices.empty()) throw Error("a multiple-choice item needs at least one choice");
  int best = 0;
  double best_value = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (choices[i].n_tokens <= 0)
      throw Error("choice " + std::to_string(i) + " has no continuation tokens (its text tokenises into the context)");
    double v = choice_value(choices[i], scoring);
    if (i == 0 || v > best_value) {
      best = static_cast<int>(i);
      best_value = v;
    }
  }
  return best;
}

double centered_accuracy(double accuracy, double baseline) {
  if (!(baseline >= 0.0 && baseline < 1.0)) throw Error("the random baseline must be in [0, 1)");
  return (accuracy - baseline) / (1.0 - baseline);
}

size_t common_prefix_length(const std::vector<std::vector<uint32_t>>& seqs) {
  if (seqs.empty()) return 0;
  size_t n = seqs[0].size();
  for (const auto& s : seqs) {
    size_t k = 0;
    size_t lim = std::min(n, s.size());
    while (k < lim && s[k] == seqs[0][k]) ++k;
    n = k;
  }
  return n;
}

size_t common_suffix_length(const std::vector<std::vector<uint32_t>>& seqs) {
  if (seqs.empty()) return 0;
  size_t n = seqs[0].size();
  for (const auto& s : seqs) {
    size_t k = 0;
    size_t lim = std::min(n, s.size());
    while (k < lim && s[s.size() - 1 - k] == seqs[0][seqs[0].size() - 1 - k]) ++k;
    n = k;
  }
  return n;
}

}  // namespace aji::eval
