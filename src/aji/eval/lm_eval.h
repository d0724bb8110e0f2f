// Scoring continuations with the engine for multiple-choice evaluation (post-training
// spec §7.1-7.2): Σ log p over the continuation tokens given the context, the
// continuation's span found as what follows the common prefix of encode(context) and
// encode(context + continuation) (so a token merged across the boundary is scored).
#pragma once

#include <string>
#include <vector>

#include "aji/eval/multiple_choice.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::eval {

struct McItem {
  std::string context;
  std::vector<std::string> choices;
  int gold = 0;
};

// bos < 0: none. Throws aji::Error when context + continuation exceed the context length.
ChoiceScore score_continuation(model::Model& model, const tokenizer::Tokenizer& tok, const std::string& context,
                               const std::string& continuation, int bos = -1);

// Token-level: Σ log p(continuation | context) for ids (n_chars = continuation tokens).
ChoiceScore score_continuation_ids(model::Model& model, const std::vector<uint32_t>& context,
                                   const std::vector<uint32_t>& continuation);

struct McResult {
  int64_t n = 0;
  double accuracy = 0;           // with the requested scoring
  double centered_accuracy = 0;  // against 1/num_choices
};
McResult evaluate_mc(model::Model& model, const tokenizer::Tokenizer& tok, const std::vector<McItem>& items,
                     McScoring scoring, int bos = -1);

}  // namespace aji::eval
