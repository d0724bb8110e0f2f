#include "aji/infer/rollout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/infer/sampler.h"

namespace aji::infer {

float full_logprob(const float* logits, int vocab, int32_t token, float temperature) {
  const double inv_t = temperature > 0.0f ? 1.0 / static_cast<double>(temperature) : 1.0;
  float mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp((static_cast<double>(logits[i]) - mx) * inv_t);
  return static_cast<float>((static_cast<double>(logits[token]) - mx) * inv_t - std::log(sum));
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

// Keeps the rows keep[0..n) (ascending slots) of the cache as rows 0..n-1, in place.
// Layout (layer, batch, max_len, width): the destination block of each kept row is never
// after its source, and sources ascend, so copying in order never overwrites a row not yet
// moved.
void compact_cache(model::KVCache& cache, const std::vector<int>& keep) {
  const int ob = cache.batch, nb = static_cast<int>(keep.size());
  const size_t eb = cache.elem_bytes();
  const size_t block = static_cast<size_t>(cache.max_len) * cache.kv_width * eb;
  const size_t used = static_cast<size_t>(cache.length) * cache.kv_width * eb;
  for (char* base : {cache.k_bytes(0, 0), cache.v_bytes(0, 0)})
    for (int l = 0; l < cache.n_layer; ++l)
      for (int j = 0; j < nb; ++j) {
        const size_t src = (static_cast<size_t>(l) * ob + keep[j]) * block;
        const size_t dst = (static_cast<size_t>(l) * nb + j) * block;
        if (src != dst) std::memmove(base + dst, base + src, used);
      }
  cache.batch = nb;
}

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
  const int V = model.config().vocab_size;
  const int ctx = model.config().max_seq_len;
  const int KVW = model.config().kv_width();
  const int n_layer = model.config().n_layer;

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

  std::map<int, std::vector<int>> buckets;  // prompt length -> prompt indices (ascending)
  for (size_t p = 0; p < prompts.size(); ++p) buckets[static_cast<int>(prompts[p].size())].push_back(static_cast<int>(p));

  std::vector<float> logits;
  std::vector<float> pre_logits(static_cast<size_t>(V));
  for (const auto& [L, members] : buckets) {
    const int budget = std::min(o.max_new_tokens, ctx - L);  // >= 1: L < ctx
    // Rows of this bucket, prompt-major: out index p*G + g.
    std::vector<size_t> rows;
    rows.reserve(members.size() * G);
    for (int p : members)
      for (int g = 0; g < G; ++g) rows.push_back(static_cast<size_t>(p) * G + g);

    int prefilled = -1;  // the prompt whose KV cache `pre` holds (reused when its rows span chunks)
    model::KVCache pre = model.make_cache(1, L);
    for (size_t c0 = 0; c0 < rows.size(); c0 += static_cast<size_t>(o.max_batch)) {
      const int R = static_cast<int>(std::min(rows.size() - c0, static_cast<size_t>(o.max_batch)));
      model::KVCache cache = model.make_cache(R, L + budget);
      logits.assign(static_cast<size_t>(R) * V, 0.0f);
      std::vector<Rng> rngs;
      rngs.reserve(R);
      for (int r = 0; r < R; ++r) {
        Rollout& ro = out[rows[c0 + r]];
        if (ro.prompt_index != prefilled) {
          pre.reset();
          const auto& pr = prompts[static_cast<size_t>(ro.prompt_index)];
          model.forward_infer(pr.data(), 1, L, pre, pre_logits.data());
          prefilled = ro.prompt_index;
        }
        for (int l = 0; l < n_layer; ++l) {
          std::memcpy(cache.k_bytes(l, r), pre.k_bytes(l, 0), pre.elem_bytes() * L * KVW);
          std::memcpy(cache.v_bytes(l, r), pre.v_bytes(l, 0), pre.elem_bytes() * L * KVW);
        }
        std::memcpy(logits.data() + static_cast<size_t>(r) * V, pre_logits.data(), sizeof(float) * V);
        const int seed_p = o.seed_index.empty() ? ro.prompt_index : o.seed_index[static_cast<size_t>(ro.prompt_index)];
        rngs.emplace_back(rollout_row_seed(o.seed, seed_p, ro.sample_index));
        ro.tokens.reserve(budget);
        ro.logprobs.reserve(budget);
      }
      cache.length = L;

      std::vector<int> slot_row(R);  // batch slot -> chunk row
      for (int r = 0; r < R; ++r) slot_row[r] = r;
      std::vector<char> done(R, 0);
      std::vector<int32_t> next(R, 0);
      int live = R;
      for (int step = 0; step < budget && live > 0; ++step) {
        const int S = static_cast<int>(slot_row.size());
        parallel_for(S, [&](int64_t s) {
          const int r = slot_row[static_cast<size_t>(s)];
          if (done[r]) return;  // a finished row kept in the batch (compact = false)
          thread_local std::vector<std::pair<float, int>> scratch;
          const float* lg = logits.data() + static_cast<size_t>(s) * V;
          const int32_t tok = sample_token(lg, V, sp, rngs[r], scratch);
          Rollout& ro = out[rows[c0 + r]];
          ro.tokens.push_back(tok);
          ro.logprobs.push_back(full_logprob(lg, V, tok, o.temperature));
          next[static_cast<size_t>(s)] = tok;
          if (is_stop(tok)) {
            ro.stopped = true;
            done[r] = 1;
          }
        });
        live = 0;
        for (int s = 0; s < S; ++s) live += done[slot_row[s]] ? 0 : 1;
        if (step + 1 == budget || live == 0) break;
        if (o.compact && live < S) {
          std::vector<int> keep;
          keep.reserve(live);
          std::vector<int> kept_rows;
          kept_rows.reserve(live);
          for (int s = 0; s < S; ++s)
            if (!done[slot_row[s]]) {
              next[keep.size()] = next[s];  // keep.size() <= s
              keep.push_back(s);
              kept_rows.push_back(slot_row[s]);
            }
          compact_cache(cache, keep);
          slot_row = std::move(kept_rows);
        }
        const int B = static_cast<int>(slot_row.size());
        model.forward_infer(next.data(), B, 1, cache, logits.data());
      }
    }
  }
  return out;
}

}  // namespace aji::infer
