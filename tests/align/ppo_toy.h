// The toy world of experiment D (post-training spec §8.1 D), shared by the PPO fast tests and
// the acceptance experiment: pick-a-number prompts "<bos><u>x?</u><a>" (x in 10..99), the
// hidden rule "even" (the reply is a number whose last digit is even, followed by </a>) as
// a reward function, and the PPO models built from the committed toy SFT fixture.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aji/align/ppo.h"
#include "aji/align/synthetic_tasks.h"
#include "align/toy_base.h"

namespace aji::ppotoy {

namespace toy = aji::align::toy;

inline std::vector<int32_t> pick_prompt(int x) {
  const std::vector<uint32_t> p = toy::render_prompt({}, std::to_string(x) + "?");
  return std::vector<int32_t>(p.begin(), p.end());
}

// All 90 pick-a-number prompts (x = 10..99).
inline std::vector<std::vector<int32_t>> pick_prompts() {
  std::vector<std::vector<int32_t>> v;
  for (int x = 10; x <= 99; ++x) v.push_back(pick_prompt(x));
  return v;
}

// The hidden rule of experiments C/D: 1 iff the reply is digits (at least one), the last one
// even, then </a> (and nothing after it).
inline float even_rule(const std::vector<int32_t>&, const std::vector<int32_t>& reply) {
  if (reply.size() < 2 || reply.back() != int32_t(toy::kAssistantEnd)) return 0.0f;
  for (size_t i = 0; i + 1 < reply.size(); ++i) {
    const int32_t id = reply[i];
    if (id < int32_t(toy::char_id('0')) || id > int32_t(toy::char_id('9'))) return 0.0f;
  }
  const int digit = reply[reply.size() - 2] - int32_t(toy::char_id('0'));
  return digit % 2 == 0 ? 1.0f : 0.0f;
}

inline align::PpoOptions toy_ppo_options() {
  align::PpoOptions o;
  o.stop_token = int32_t(toy::kAssistantEnd);
  o.pad_id = int32_t(toy::kPad);
  o.max_new_tokens = 6;
  return o;
}

// Policy, frozen reference and value trunk from the SFT fixture (value head zero unless
// a reward-model head is given), with their optimizers.
struct ToyPpo {
  model::Model policy, ref, value;
  model::ScalarHead head;
  align::PpoOptimizers opt;
  align::PpoModels models() {
    return align::PpoModels{&policy, &ref, &value, &head, &opt.policy, &opt.value, &opt.head};
  }
  explicit ToyPpo(const align::PpoOptions& o, const model::Model* value_init = nullptr,
                  const model::ScalarHead* head_init = nullptr)
      : policy(toybase::load_toy_sft()),
        ref(toybase::load_toy_sft()),
        value(toybase::load_toy_sft()),
        head(value.config().d_model),
        opt(align::make_ppo_optimizers(policy, value, head, o)) {
    if (value_init) std::copy_n(value_init->params(), value.num_params(), value.params());
    if (head_init) head = *head_init;
  }
};

}  // namespace aji::ppotoy
