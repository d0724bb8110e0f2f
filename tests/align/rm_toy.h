// Experiment C's data (post-training spec §8.1 C), shared by the reward-model tests and the
// PPO experiment (D trains against the RM of C): pick-a-number prompts "x?" (x in 10..99),
// K replies sampled from the toy SFT policy at temperature 1 (infer/rollout.h), each scored
// by the hidden rule "even" (the reply is an even number followed by </a>), one RmGroup per
// prompt with the rule scores as preferences (every ordered pair of distinct score; ties drop).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aji/align/reward_model.h"
#include "aji/align/synthetic_tasks.h"
#include "aji/base/rng.h"
#include "aji/infer/rollout.h"
#include "aji/model/model.h"

namespace aji::rmtoy {

// The pick-a-number prompt "<bos><u>x?</u><a>".
inline std::vector<int32_t> pick_prompt(int x) {
  const std::vector<uint32_t> p = align::toy::render_prompt({}, std::to_string(x) + "?");
  return std::vector<int32_t>(p.begin(), p.end());
}

// Hidden rule "even": 1 when the generated tokens are digits forming an even number, then </a>.
inline float even_rule(const std::vector<int32_t>& generated) {
  const std::vector<uint32_t> g(generated.begin(), generated.end());
  const align::toy::ReplyCheck rc = align::toy::read_reply(g);
  if (!rc.stopped || rc.reply.empty()) return 0.0f;
  for (char c : rc.reply)
    if (c < '0' || c > '9') return 0.0f;
  return ((rc.reply.back() - '0') % 2 == 0) ? 1.0f : 0.0f;
}

struct ToyPrefs {
  std::vector<align::RmGroup> groups;  // one per prompt (including those without pairs)
  std::vector<std::vector<float>> scores;  // the rule's score of each reply, per prompt
  int64_t prompts_with_pairs = 0;
  int64_t pairs = 0;
  double rule_mean = 0;  // share of sampled replies the rule calls good
};

// n_prompts prompts (x drawn with Rng(seed)), k samples each from `policy` (rollout seed `seed`).
inline ToyPrefs toy_preferences(model::Model& policy, int n_prompts, int k, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n_prompts; ++i) prompts.push_back(pick_prompt(10 + int(rng.below(90))));
  infer::RolloutOptions ro;
  ro.group_size = k;
  ro.max_new_tokens = 6;
  ro.temperature = 1.0f;
  ro.stop_tokens = {int32_t(align::toy::kAssistantEnd)};
  ro.seed = seed;
  const std::vector<infer::Rollout> rolls = infer::rollout(policy, prompts, ro);
  ToyPrefs out;
  double good = 0;
  for (int i = 0; i < n_prompts; ++i) {
    std::vector<std::vector<int32_t>> seqs;
    std::vector<float> score;
    for (int s = 0; s < k; ++s) {
      const infer::Rollout& r = rolls[size_t(i) * k + s];
      std::vector<int32_t> seq = prompts[size_t(i)];
      seq.insert(seq.end(), r.tokens.begin(), r.tokens.end());
      seqs.push_back(std::move(seq));
      score.push_back(even_rule(r.tokens));
      good += score.back();
    }
    align::RmGroup g = align::rm_group_from_scores(std::move(seqs), score);
    out.scores.push_back(score);
    const int64_t p = align::rm_group_pairs(g);
    out.pairs += p;
    out.prompts_with_pairs += p > 0;
    out.groups.push_back(std::move(g));
  }
  out.rule_mean = good / double(n_prompts * k);
  return out;
}

}  // namespace aji::rmtoy
