// Experiment F's data and judges (post-training spec §8.1 F) on the toy world, shared by
// the DPO fast tests and the acceptance experiment.
//
// Hidden rule ("even", as in experiments C/D/E1): a pick-a-number reply is good iff it is a
// number (digits only) that is even, followed by </a>. Pairs: for each fresh prompt "x?"
// (x in 10..99) sample 4 replies from the policy (infer::rollout, temperature 1, seeded);
// chosen = the first reply that satisfies the rule, rejected = the first that violates it;
// prompts whose 4 samples all agree give no pair.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "aji/align/dpo.h"
#include "aji/align/synthetic_tasks.h"
#include "aji/base/rng.h"
#include "aji/infer/rollout.h"

namespace aji::dpotoy {

namespace toy = aji::align::toy;

constexpr int kMaxNewTokens = 6;  // 5 reply characters + </a>

struct Judged {
  std::string reply;
  bool stopped = false;
  bool even = false;       // the hidden rule
  bool in_format = false;  // two digits (10..99) then </a>, the SFT data's form
};

inline Judged judge(const std::vector<int32_t>& generated) {
  toy::ReplyCheck r = toy::read_reply(std::vector<uint32_t>(generated.begin(), generated.end()), 5);
  Judged j;
  j.reply = r.reply;
  j.stopped = r.stopped;
  bool digits = !r.reply.empty();
  for (char c : r.reply) digits = digits && c >= '0' && c <= '9';
  j.even = r.stopped && digits && (r.reply.back() - '0') % 2 == 0;
  j.in_format = r.stopped && digits && r.reply.size() == 2 && r.reply[0] != '0';
  return j;
}

// n fresh pick-a-number prompts "<bos><u>x?</u><a>", x uniform in 10..99.
inline std::vector<std::vector<int32_t>> pick_prompts(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    const int x = 10 + (int)rng.below(90);
    std::vector<uint32_t> p = toy::render_prompt({}, std::to_string(x) + "?");
    out.emplace_back(p.begin(), p.end());
  }
  return out;
}

inline infer::RolloutOptions sample_options(int group, uint64_t seed) {
  infer::RolloutOptions ro;
  ro.group_size = group;
  ro.max_new_tokens = kMaxNewTokens;
  ro.temperature = 1.0f;
  ro.stop_tokens = {(int32_t)toy::kAssistantEnd};
  ro.seed = seed;
  return ro;
}

// `n_pairs` pairs from the policy, prompts drawn in chunks from `seed` until enough.
// swap = the negative control: chosen and rejected exchanged.
inline std::vector<align::PreferenceIds> even_rule_pairs(model::Model& policy, int n_pairs, uint64_t seed,
                                                         bool swap = false) {
  std::vector<align::PreferenceIds> pairs;
  for (uint64_t round = 0; (int)pairs.size() < n_pairs; ++round) {
    const std::vector<std::vector<int32_t>> prompts = pick_prompts(256, seed * 7919 + round);
    const std::vector<infer::Rollout> rs = infer::rollout(policy, prompts, sample_options(4, seed * 104729 + round));
    for (size_t p = 0; p < prompts.size() && (int)pairs.size() < n_pairs; ++p) {
      const infer::Rollout *good = nullptr, *bad = nullptr;
      for (int g = 0; g < 4; ++g) {
        const infer::Rollout& r = rs[p * 4 + g];
        const bool ok = judge(r.tokens).even;
        if (ok && !good) good = &r;
        if (!ok && !bad) bad = &r;
      }
      if (!good || !bad) continue;
      align::PreferenceIds pr;
      pr.prompt = prompts[p];
      pr.chosen = swap ? bad->tokens : good->tokens;
      pr.rejected = swap ? good->tokens : bad->tokens;
      pairs.push_back(std::move(pr));
    }
  }
  return pairs;
}

struct SampleScore {
  double satisfaction = 0, in_format = 0, kl = 0, single_digit = 0;
  int distinct = 0;
};

// 100 fresh prompts × 4 samples at temperature 1: the rule's rate, in-format rate, distinct
// replies and the KL to the reference (align::dpo_sample_eval).
inline SampleScore score_samples(model::Model& policy, model::Model& reference, int n_prompts, uint64_t seed) {
  const std::vector<std::vector<int32_t>> prompts = pick_prompts(n_prompts, seed);
  const align::DpoSampleEval e = align::dpo_sample_eval(policy, reference, prompts, sample_options(4, seed + 1));
  SampleScore s;
  std::set<std::string> distinct;
  for (const infer::Rollout& r : e.rollouts) {
    const Judged j = judge(r.tokens);
    s.satisfaction += j.even;
    s.in_format += j.in_format;
    s.single_digit += j.stopped && j.reply.size() == 1;
    distinct.insert(j.reply + (j.stopped ? "|" : "..."));
  }
  const double n = (double)e.rollouts.size();
  s.satisfaction /= n;
  s.in_format /= n;
  s.single_digit /= n;
  s.distinct = (int)distinct.size();
  s.kl = e.kl;
  return s;
}

}  // namespace aji::dpotoy
