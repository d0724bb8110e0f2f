// GRPO on the toy world (post-training spec §8.1 E): tasks and rule rewards shared by
// tests/align/grpo_test.cpp and grpo_experiment_slowtest.cpp.
//   pick a number: user "x?" (x in 10..99), reward "even" = the reply is a number (digits
//                  only, non-empty) whose last digit is even, followed by </a> (experiment C's
//                  hidden rule, here a verifier)
//   addition:      user "a+b=", reward 1 iff the reply is exactly a+b followed by </a>
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "aji/align/grpo.h"
#include "aji/align/synthetic_tasks.h"
#include "aji/base/rng.h"

namespace aji::grpotoy {

namespace toy = align::toy;

inline std::vector<int32_t> ids32(const std::vector<uint32_t>& v) { return {v.begin(), v.end()}; }

inline align::GrpoTask pick_task(int x) {
  align::GrpoTask t;
  t.prompt = ids32(toy::render_prompt({}, std::to_string(x) + "?"));
  t.source = "pick " + std::to_string(x);
  return t;
}

// n prompts "x?" with x uniform in 10..99.
inline std::vector<align::GrpoTask> pick_tasks(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<align::GrpoTask> v;
  for (int i = 0; i < n; ++i) v.push_back(pick_task(10 + (int)rng.below(90)));
  return v;
}

inline align::GrpoTask addition_task(int a, int b) {
  align::GrpoTask t;
  t.prompt = ids32(toy::render_prompt({}, std::to_string(a) + "+" + std::to_string(b) + "="));
  t.answer = std::to_string(a + b);
  t.source = std::to_string(a) + "+" + std::to_string(b);
  return t;
}

inline std::vector<align::GrpoTask> training_addition_tasks(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<align::GrpoTask> v;
  for (int i = 0; i < n; ++i) {
    auto [a, b] = toy::sample_training_pair(rng);
    v.push_back(addition_task(a, b));
  }
  return v;
}

inline std::vector<align::GrpoTask> heldout_addition_tasks(int n, uint64_t seed) {
  std::vector<align::GrpoTask> v;
  for (auto [a, b] : toy::heldout_pairs(n, seed)) v.push_back(addition_task(a, b));
  return v;
}

// The reply text before the stop token; "" with stopped=false when there is none.
inline toy::ReplyCheck reply_of(const infer::Rollout& r) {
  std::vector<uint32_t> ids(r.tokens.begin(), r.tokens.end());
  return toy::read_reply(ids, (int)ids.size());
}

inline bool is_number(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

inline double even_reward(const align::GrpoTask&, const infer::Rollout& r) {
  const toy::ReplyCheck c = reply_of(r);
  if (!r.stopped || !c.stopped || !is_number(c.reply)) return 0.0;
  return ((c.reply.back() - '0') % 2 == 0) ? 1.0 : 0.0;
}

inline double exact_reward(const align::GrpoTask& t, const infer::Rollout& r) {
  const toy::ReplyCheck c = reply_of(r);
  return (r.stopped && c.stopped && c.reply == t.answer) ? 1.0 : 0.0;
}

inline std::vector<int32_t> stop_tokens() { return {(int32_t)toy::kAssistantEnd}; }

// Pick-a-number evaluation (experiment D/E1): rule satisfaction, KL to the reference, the
// number of distinct replies, in-format rate (2 digits + </a>).
struct PickEval {
  double satisfaction = 0, kl = 0, in_format = 0;
  int distinct = 0;
};
inline PickEval pick_eval(model::Model& policy, model::Model& reference, int prompts, int samples, uint64_t seed) {
  const std::vector<align::GrpoTask> tasks = pick_tasks(prompts, seed);
  align::GrpoEvalOptions eo;
  eo.samples = samples;
  eo.max_new_tokens = 8;
  eo.temperature = 1.0f;
  eo.stop_tokens = stop_tokens();
  eo.seed = seed + 1;
  const align::GrpoEval ev = align::grpo_evaluate(policy, &reference, tasks, even_reward, eo);
  PickEval pe;
  pe.satisfaction = ev.mean_reward;
  pe.kl = ev.kl;
  std::set<std::string> distinct;
  double fmt = 0;
  for (const infer::Rollout& r : ev.completions) {
    const toy::ReplyCheck c = reply_of(r);
    distinct.insert(c.reply + (c.stopped ? "|" : "~"));
    fmt += (r.stopped && c.reply.size() == 2 && is_number(c.reply)) ? 1 : 0;
  }
  pe.distinct = (int)distinct.size();
  pe.in_format = fmt / double(ev.completions.size());
  return pe;
}

}  // namespace aji::grpotoy
