#include "aji/eval/lm_eval.h"

#include "aji/base/error.h"

namespace aji::eval {

namespace {
std::vector<uint32_t> enc(const tokenizer::Tokenizer& tok, const std::string& s, int bos) {
  std::vector<uint32_t> ids;
  if (bos >= 0) ids.push_back(static_cast<uint32_t>(bos));
  for (auto id : tok.encode(s, tokenizer::SpecialPolicy::kAsText)) ids.push_back(static_cast<uint32_t>(id));
  return ids;
}
}  // namespace

ChoiceScore score_continuation(model::Model& model, const tokenizer::Tokenizer& tok, const std::string& context,
                               const std::string& continuation, int bos) {
  std::vector<uint32_t> ctx = enc(tok, context, bos);
  std::vector<uint32_t> full = enc(tok, context + continuation, bos);
  size_t start = common_prefix_length({ctx, full});
  if (start == 0) start = 1;  // the first token has no prediction
  if (full.size() > static_cast<size_t>(model.config().max_seq_len))
    throw Error("context + continuation (" + std::to_string(full.size()) + " tokens) exceed the model's context")
        .fix("use fewer shots or shorter items");
  ChoiceScore s;
  s.n_chars = static_cast<int64_t>(continuation.size());
  if (start >= full.size()) return s;
  std::vector<int32_t> ids(full.begin(), full.end());
  std::vector<float> lp = model.token_logprobs(ids.data(), static_cast<int>(ids.size()));
  for (size_t i = start; i < full.size(); ++i) s.sum_logprob += lp[i - 1];
  s.n_tokens = static_cast<int64_t>(full.size() - start);
  return s;
}

ChoiceScore score_continuation_ids(model::Model& model, const std::vector<uint32_t>& context,
                                   const std::vector<uint32_t>& continuation) {
  if (context.empty()) throw Error("an empty context cannot be scored");
  std::vector<int32_t> ids(context.begin(), context.end());
  ids.insert(ids.end(), continuation.begin(), continuation.end());
  if (ids.size() > static_cast<size_t>(model.config().max_seq_len))
    throw Error("context + continuation exceed the model's context").fix("use fewer shots");
  std::vector<float> lp = model.token_logprobs(ids.data(), static_cast<int>(ids.size()));
  ChoiceScore s;
  for (size_t i = context.size(); i < ids.size(); ++i) s.sum_logprob += lp[i - 1];
  s.n_tokens = s.n_chars = static_cast<int64_t>(continuation.size());
  return s;
}

McResult evaluate_mc(model::Model& model, const tokenizer::Tokenizer& tok, const std::vector<McItem>& items,
                     McScoring scoring, int bos) {
  McResult r;
  double correct = 0, baseline = 0;
  for (const auto& it : items) {
    std::vector<ChoiceScore> cs;
    for (const auto& c : it.choices) cs.push_back(score_continuation(model, tok, it.context, c, bos));
    if (pick_choice(cs, scoring) == it.gold) correct += 1;
    baseline += 1.0 / static_cast<double>(it.choices.size());
    ++r.n;
  }
  if (r.n > 0) {
    r.accuracy = correct / r.n;
    r.centered_accuracy = centered_accuracy(r.accuracy, baseline / r.n);
  }
  return r;
}

}  // namespace aji::eval
