#include "aji/infer/generate.h"

#include <algorithm>
#include <cmath>

#include "aji/base/error.h"

namespace aji::infer {

namespace {

void check_prompt(const model::Model& model, const std::vector<int32_t>& prompt) {
  const auto& c = model.config();
  if (prompt.empty()) throw Error("the prompt is empty").fix("give a prompt of at least one token");
  if (static_cast<int>(prompt.size()) >= c.max_seq_len)
    throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens but the model's context is " +
                std::to_string(c.max_seq_len))
        .fix("shorten the prompt to fewer than " + std::to_string(c.max_seq_len) + " tokens");
  for (int32_t id : prompt)
    if (id < 0 || id >= c.vocab_size)
      throw Error("prompt token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                  std::to_string(c.vocab_size))
          .fix("use the tokenizer that belongs to this model");
}

bool is_stop(const GenerateOptions& o, int32_t id) {
  return std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) != o.stop_tokens.end();
}

}  // namespace

std::vector<int32_t> generate(model::Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                              const TokenCallback& on_token, StopReason* reason) {
  check_prompt(model, prompt);
  const int V = model.config().vocab_size;
  const int ctx = model.config().max_seq_len;
  const int room = ctx - static_cast<int>(prompt.size());
  const int budget = std::min<int>(std::max(o.max_tokens, 0), room);
  StopReason why = o.max_tokens > room ? StopReason::kContextLimit : StopReason::kMaxTokens;
  std::vector<int32_t> seq = prompt;  // the context the repetition penalty sees
  if (budget > 0) {
    model::KVCache cache = model.make_cache(1, std::min<int>(ctx, static_cast<int>(prompt.size()) + budget));
    std::vector<float> logits(static_cast<size_t>(V));
    model.forward_infer(prompt.data(), 1, static_cast<int>(prompt.size()), cache, logits.data());
    Rng rng(o.seed);
    std::vector<std::pair<float, int>> scratch;
    for (int i = 0; i < budget; ++i) {
      const int32_t next = sample_token(logits.data(), V, o.sampling, rng, scratch, seq);
      seq.push_back(next);
      if (on_token && !on_token(next)) {
        why = StopReason::kCallback;
        break;
      }
      if (is_stop(o, next)) {
        why = StopReason::kStopToken;
        break;
      }
      if (i + 1 == budget) break;
      model.forward_infer(&next, 1, 1, cache, logits.data());
    }
  }
  if (reason) *reason = why;
  return {seq.begin() + static_cast<std::ptrdiff_t>(prompt.size()), seq.end()};
}

std::vector<int32_t> generate_recompute(model::Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& o, const TokenCallback& on_token, StopReason* reason) {
  check_prompt(model, prompt);
  const int V = model.config().vocab_size;
  const int C = model.config().d_model;
  const int ctx = model.config().max_seq_len;
  const int room = ctx - static_cast<int>(prompt.size());
  const int budget = std::min<int>(std::max(o.max_tokens, 0), room);
  StopReason why = o.max_tokens > room ? StopReason::kContextLimit : StopReason::kMaxTokens;
  std::vector<int32_t> seq = prompt;
  std::vector<float> logits(static_cast<size_t>(V));
  Rng rng(o.seed);
  std::vector<std::pair<float, int>> scratch;
  for (int i = 0; i < budget; ++i) {
    const int T = static_cast<int>(seq.size());
    model.forward(seq.data(), 1, T);
    model.lm_logits(model.hidden() + static_cast<size_t>(T - 1) * C, 1, logits.data());
    const int32_t next = sample_token(logits.data(), V, o.sampling, rng, scratch, seq);
    seq.push_back(next);
    if (on_token && !on_token(next)) {
      why = StopReason::kCallback;
      break;
    }
    if (is_stop(o, next)) {
      why = StopReason::kStopToken;
      break;
    }
  }
  if (reason) *reason = why;
  return {seq.begin() + static_cast<std::ptrdiff_t>(prompt.size()), seq.end()};
}

ScoreResult score_tokens(model::Model& model, const std::vector<int32_t>& tokens, uint64_t text_bytes) {
  ScoreResult r;
  r.tokens = tokens;
  r.bytes = text_bytes;
  const int V = model.config().vocab_size;
  for (int32_t id : tokens)
    if (id < 0 || id >= V)
      throw Error("token id " + std::to_string(id) + " is outside the model's vocabulary of " + std::to_string(V))
          .fix("score with the tokenizer that belongs to this model");
  const int n = static_cast<int>(tokens.size());
  if (n < 2) throw Error("nothing to score: the text has fewer than two tokens").fix("give a longer text");
  const int ctx = model.config().max_seq_len;
  r.logprobs.assign(static_cast<size_t>(n - 1), 0.0f);
  if (n <= ctx) {
    r.logprobs = model.token_logprobs(tokens.data(), n);
  } else {
    // Windows of ctx tokens advancing by half a window; each window contributes the
    // log-probs of the positions the previous window did not cover.
    const int stride = std::max(1, ctx / 2);
    int covered = 0;  // logprobs[0..covered) are done
    for (int start = 0; covered < n - 1; start += stride) {
      const int len = std::min(ctx, n - start);
      std::vector<float> lp = model.token_logprobs(tokens.data() + start, len);
      // lp[j] = log p(tokens[start+j+1] | ...): logprob index start+j
      for (int j = 0; j < len - 1; ++j)
        if (start + j >= covered) r.logprobs[static_cast<size_t>(start + j)] = lp[static_cast<size_t>(j)];
      covered = start + len - 1;
    }
  }
  for (float lp : r.logprobs) r.total_nll -= lp;
  r.mean_loss = r.total_nll / static_cast<double>(r.logprobs.size());
  r.perplexity = std::exp(r.mean_loss);
  r.bits_per_byte = text_bytes > 0 ? r.total_nll / std::log(2.0) / static_cast<double>(text_bytes) : 0.0;
  return r;
}

}  // namespace aji::infer
