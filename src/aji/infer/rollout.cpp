#include "aji/infer/rollout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/infer/sampler.h"

namespace aji::infer {

std::optional<kernels::cpu::WeightType> training_rollout_weights(const model::Model& policy) {
  if (policy.precision() == model::Precision::kBf16) return kernels::cpu::WeightType::kBF16;
  return std::nullopt;
}

uint64_t rollout_row_seed(uint64_t seed, int prompt_index, int sample_index) {
  uint64_t s = seed;
  uint64_t h = splitmix64(s);
  s = h ^ static_cast<uint64_t>(static_cast<uint32_t>(prompt_index));
  h = splitmix64(s);
  s = h ^ (static_cast<uint64_t>(static_cast<uint32_t>(sample_index)) << 32);
  return splitmix64(s);
}

namespace {

void check_options(const RolloutOptions& o) {
  if (o.group_size < 1)
    throw Error("rollout: group_size " + std::to_string(o.group_size) + " is below 1")
        .fix("sample at least one continuation per prompt (--group-size 1 or more)");
  if (o.max_new_tokens < 0)
    throw Error("rollout: max_new_tokens " + std::to_string(o.max_new_tokens) + " is negative")
        .fix("give --max-new-tokens 0 or more");
  if (o.max_batch < 1)
    throw Error("rollout: max_batch " + std::to_string(o.max_batch) + " is below 1").fix("decode at least one row at a time");
  SamplingParams sp;
  sp.temperature = o.temperature;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  check_sampling_params(sp);
}

void check_prompts(const model::Model& model, const std::vector<std::vector<int32_t>>& prompts) {
  const auto& c = model.config();
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto& pr = prompts[p];
    const std::string where = "rollout prompt " + std::to_string(p);
    if (pr.empty()) throw Error(where + " is empty").fix("give every prompt at least one token (e.g. <bos>)");
    if (static_cast<int>(pr.size()) >= c.max_seq_len)
      throw Error(where + " has " + std::to_string(pr.size()) + " tokens but the model's context is " +
                  std::to_string(c.max_seq_len))
          .fix("shorten the prompt to fewer than " + std::to_string(c.max_seq_len) + " tokens, or skip it");
    for (size_t i = 0; i < pr.size(); ++i)
      if (pr[i] < 0 || pr[i] >= c.vocab_size)
        throw Error(where + ", token " + std::to_string(i) + ": id " + std::to_string(pr[i]) +
                    " is outside the model's vocabulary of " + std::to_string(c.vocab_size))
            .fix("use the tokenizer that belongs to this model");
  }
}

// Model::use_weights(type) for a scope, the model's weight type restored at its end.
class WeightsScope {
 public:
  WeightsScope(model::Model& m, std::optional<kernels::cpu::WeightType> type) : m_(m), prev_(m.weights()) {
    if (!type || *type == prev_) return;
    m_.use_weights(*type, false);
    active_ = true;
  }
  ~WeightsScope() {
    if (active_) m_.use_weights(prev_, false);
  }
  WeightsScope(const WeightsScope&) = delete;
  WeightsScope& operator=(const WeightsScope&) = delete;

 private:
  model::Model& m_;
  kernels::cpu::WeightType prev_;
  bool active_ = false;
};

}  // namespace

std::vector<Rollout> rollout(model::Model& model, const std::vector<std::vector<int32_t>>& prompts,
                             const RolloutOptions& o) {
  check_options(o);
  check_prompts(model, prompts);
  if (!o.seed_index.empty() && o.seed_index.size() != prompts.size())
    throw Error("rollout: " + std::to_string(o.seed_index.size()) + " seed indices for " +
                std::to_string(prompts.size()) + " prompts")
        .fix("give one seed index per prompt, or none");
  const int G = o.group_size;
  const WeightsScope weights_scope(model, o.weights);
  const int V = model.config().vocab_size;
  const int ctx = model.config().max_seq_len;

  std::vector<Rollout> out(prompts.size() * static_cast<size_t>(G));
  for (size_t p = 0; p < prompts.size(); ++p)
    for (int g = 0; g < G; ++g) {
      Rollout& r = out[p * G + g];
      r.prompt_index = static_cast<int>(p);
      r.sample_index = g;
    }
  if (prompts.empty() || o.max_new_tokens == 0) return out;

  SamplingParams sp;
  sp.temperature = o.temperature;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  auto is_stop = [&](int32_t id) {
    return std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) != o.stop_tokens.end();
  };

  // Rows in order (prompt-major). At most max_batch of them decode together, each in a cache of
  // its own (batch 1, its prompt's length + its budget), so prompts of any lengths share a
  // step; a row that ends leaves the batch at once and the next row takes its place.
  struct Slot {
    size_t row;           // index into out
    model::KVCache cache;  // this row's keys and values
    Rng rng;
    int budget;           // new tokens this row may sample: min(max_new_tokens, ctx - prompt length)
    int32_t next = 0;     // the token sampled this step (the next forward's input)
    bool done = false;
  };
  std::vector<Slot> active;
  active.reserve(static_cast<size_t>(o.max_batch));
  std::vector<float> logits;  // (active.size(), V), slot order
  std::vector<float> pre_logits(static_cast<size_t>(V));
  model::KVCache pre;  // the prefill of prompt `prefilled`, copied into each of its rows
  int prefilled = -1;
  size_t pending = 0;  // the next row of out to admit
  std::vector<model::KVCache*> caches;
  while (true) {
    // admit rows into free slots: their first logits are their prompt's (prefilled once)
    while (active.size() < static_cast<size_t>(o.max_batch) && pending < out.size()) {
      Rollout& ro = out[pending];
      const auto& pr = prompts[static_cast<size_t>(ro.prompt_index)];
      const int L = static_cast<int>(pr.size());
      if (ro.prompt_index != prefilled) {
        pre = model.make_cache(1, L);
        model.forward_infer(pr.data(), 1, L, pre, pre_logits.data());
        prefilled = ro.prompt_index;
      }
      const int budget = std::min(o.max_new_tokens, ctx - L);  // >= 1: L < ctx
      model::KVCache cache = model.repeat_cache(pre, 1, L + budget);
      const int seed_p = o.seed_index.empty() ? ro.prompt_index : o.seed_index[static_cast<size_t>(ro.prompt_index)];
      ro.tokens.reserve(static_cast<size_t>(budget));
      ro.logprobs.reserve(static_cast<size_t>(budget));
      logits.resize((active.size() + 1) * static_cast<size_t>(V));
      std::memcpy(logits.data() + active.size() * static_cast<size_t>(V), pre_logits.data(), sizeof(float) * V);
      active.push_back(Slot{pending, std::move(cache), Rng(rollout_row_seed(o.seed, seed_p, ro.sample_index)), budget});
      ++pending;
    }
    if (active.empty()) break;
    // every row samples its next token from its logits
    parallel_for(static_cast<int64_t>(active.size()), [&](int64_t s) {
      Slot& sl = active[static_cast<size_t>(s)];
      thread_local std::vector<std::pair<float, int>> scratch;
      const float* lg = logits.data() + static_cast<size_t>(s) * V;
      float lp = 0.0f;
      const int32_t tok = sample_token_logprob(lg, V, sp, sl.rng, scratch, &lp);
      Rollout& ro = out[sl.row];
      ro.tokens.push_back(tok);
      ro.logprobs.push_back(lp);
      sl.next = tok;
      if (is_stop(tok)) {
        ro.stopped = true;
        sl.done = true;
      } else if (static_cast<int>(ro.tokens.size()) >= sl.budget) {
        sl.done = true;
      }
    });
    if (o.stop_when)
      for (Slot& sl : active)
        if (!sl.done && o.stop_when(out[sl.row])) {
          out[sl.row].stopped = true;
          sl.done = true;
        }
    active.erase(std::remove_if(active.begin(), active.end(), [](const Slot& sl) { return sl.done; }), active.end());
    if (active.empty()) continue;  // admit the next rows, or end
    // the rows still going: one decode step, each against its own cache
    std::vector<int32_t> next(active.size());
    caches.clear();
    for (size_t s = 0; s < active.size(); ++s) {
      next[s] = active[s].next;
      caches.push_back(&active[s].cache);
    }
    logits.resize(active.size() * static_cast<size_t>(V));
    model.forward_decode(next.data(), static_cast<int>(active.size()), caches.data(), logits.data(), true);
  }
  return out;
}

}  // namespace aji::infer
