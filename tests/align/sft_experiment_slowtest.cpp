// Experiment A of the post-training spec (§8.1): SFT with the chat template, assistant-only
// loss, multi-turn, starting from the toy base model. Before SFT the base model cannot use
// the template (EM ≈ 0, never stops); after 1,500 steps it answers held-out additions and
// stops at </a>. Negative control (i): with </a> masked out of the loss the model is never
// taught to stop, and the stop rate collapses.
#include <gtest/gtest.h>

#include <cstdio>

#include "aji/base/threads.h"
#include "align/toy_base.h"

namespace toy = aji::align::toy;

namespace {

struct ChatScore {
  double em = 0, stop = 0;
};

ChatScore score_heldout(aji::model::Model& m, int n) {
  ChatScore s;
  for (auto [a, b] : toy::heldout_pairs(n, 99)) {
    const toy::ToyTurn turn = toy::addition_turn(a, b);
    std::vector<uint32_t> p = toy::render_prompt({}, turn.user);
    std::vector<int32_t> prompt(p.begin(), p.end());
    aji::infer::GenerateOptions g;
    g.max_tokens = 6;
    g.sampling.temperature = 0.0f;
    g.stop_tokens = {(int32_t)toy::kAssistantEnd};
    std::vector<int32_t> out = aji::infer::generate(m, prompt, g);
    toy::ReplyCheck r = toy::read_reply(std::vector<uint32_t>(out.begin(), out.end()), 5);
    s.stop += r.stopped;
    s.em += r.stopped && r.reply == turn.reply;
  }
  s.em /= n;
  s.stop /= n;
  return s;
}

ChatScore run_sft(bool mask_end_of_turn) {
  aji::model::Model m = aji::toybase::load_toy_base();
  aji::Rng rng(2024);
  std::vector<aji::align::RenderedSequence> train;
  for (int i = 0; i < 1500 * 32; ++i) train.push_back(toy::render(toy::sample_sft_conversation(rng), mask_end_of_turn));
  aji::align::SftOptions o;
  o.batch = 32;
  o.steps = 1500;
  o.lr = 1e-3f;
  o.decay = "linear";
  o.min_lr_frac = 0.0f;
  o.pad_id = toy::kPad;
  aji::train::AdamW opt(m.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  aji::align::SftResult r = aji::align::sft_train(m, opt, train, {}, o, {});
  std::printf("SFT (mask </a> %s): loss %.3f -> %.3f\n", mask_end_of_turn ? "on" : "off", r.step_losses.front(),
              r.step_losses.back());
  return score_heldout(m, 300);
}

}  // namespace

TEST(SftExperimentA, TeachesTheTemplateAndToStop) {
  aji::set_num_threads(1);
  aji::model::Model base = aji::toybase::load_toy_base();
  const ChatScore before = score_heldout(base, 300);
  const ChatScore after = run_sft(true);
  std::printf("held-out addition: before SFT EM %.3f stop %.3f | after SFT EM %.3f stop %.3f\n", before.em,
              before.stop, after.em, after.stop);
  EXPECT_LE(before.em, 0.05);
  EXPECT_GE(after.stop, 0.98);
  EXPECT_GE(after.em, 0.60);
  const ChatScore control = run_sft(false);
  std::printf("negative control (</a> not supervised): EM %.3f stop %.3f\n", control.em, control.stop);
  EXPECT_LT(control.stop, 0.5);
}
