// The toy world of experiment D (post-training spec §8.1 D), shared by the PPO fast tests and
// the acceptance experiment: pick-a-number prompts "<bos><u>x?</u><a>" (x in 10..99), the
// hidden rule "even" (the reply is a number whose last digit is even, followed by </a>) as
// a reward function (both from experiment C's rm_toy.h), and the PPO models built from the
// committed toy SFT fixture.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aji/align/ppo.h"
#include "aji/align/synthetic_tasks.h"
#include "align/rm_toy.h"
#include "align/toy_base.h"

namespace aji::ppotoy {

namespace toy = aji::align::toy;

using rmtoy::pick_prompt;  // "<bos><u>x?</u><a>" (experiment C's helpers, align/rm_toy.h)

// All 90 pick-a-number prompts (x = 10..99).
inline std::vector<std::vector<int32_t>> pick_prompts() {
  std::vector<std::vector<int32_t>> v;
  for (int x = 10; x <= 99; ++x) v.push_back(pick_prompt(x));
  return v;
}

// The hidden rule of experiments C/D as a RewardFn: 1 iff the reply is an even number
// followed by </a> (rmtoy::even_rule).
inline float even_rule(const std::vector<int32_t>&, const std::vector<int32_t>& reply) {
  return rmtoy::even_rule(reply);
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
