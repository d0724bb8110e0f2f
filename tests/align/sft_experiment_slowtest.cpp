// Experiment A of the post-training spec (§8.1): SFT with the chat template, assistant-only
// loss, multi-turn, starting from the toy base model. Before SFT the base model cannot use
// the template (EM ≈ 0, never stops); after 1,500 steps it answers held-out additions and
// stops at </a>. Negative controls, each of which must fail the pass criterion: (i) with </a>
// masked out of the loss the model is never taught to stop, and the stop rate collapses;
// (ii) with the mask shifted one position later (the reply's first character unsupervised,
// the token after </a> supervised) exact match collapses; (iii) prompting the trained model
// without the assistant-start token <a> (the template not followed) makes exact match drop.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "aji/base/threads.h"
#include "align/toy_base.h"

namespace toy = aji::align::toy;

namespace {

struct ChatScore {
  double em = 0, stop = 0;
};

ChatScore score_heldout(aji::model::Model& m, int n, bool drop_assistant_start = false) {
  ChatScore s;
  for (auto [a, b] : toy::heldout_pairs(n, 99)) {
    const toy::ToyTurn turn = toy::addition_turn(a, b);
    std::vector<uint32_t> p = toy::render_prompt({}, turn.user);
    if (drop_assistant_start) {
      EXPECT_EQ(p.back(), toy::kAssistantStart);
      p.pop_back();
    }
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

enum class Mask { kRight, kNoEndOfTurn, kShifted };

ChatScore run_sft(Mask mask, aji::model::Model* trained = nullptr) {
  aji::model::Model m = aji::toybase::load_toy_base();
  std::vector<aji::align::RenderedSequence> train =
      aji::toybase::toy_sft_rows(1500 * 32, 2024, mask != Mask::kNoEndOfTurn);
  if (mask == Mask::kShifted)
    for (auto& seq : train) {  // mask[i] = original mask[i-1]
      auto& lm = seq.loss_mask;
      for (size_t j = lm.size() - 1; j > 0; --j) lm[j] = lm[j - 1];
      lm[0] = 0;
    }
  aji::align::SftOptions o = aji::toybase::toy_sft_options(1500);
  aji::train::AdamW opt(m.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  aji::align::SftResult r = aji::align::sft_train(m, opt, train, {}, o, {});
  const char* names[] = {"assistant reply + </a>", "</a> not supervised", "shifted one position later"};
  std::printf("SFT (mask: %s): loss %.3f -> %.3f\n", names[int(mask)], r.step_losses.front(), r.step_losses.back());
  ChatScore score = score_heldout(m, 300);
  if (trained) *trained = std::move(m);
  return score;
}

}  // namespace

TEST(SftExperimentA, TeachesTheTemplateAndToStop) {
  aji::set_num_threads(1);
  aji::model::Model base = aji::toybase::load_toy_base();
  const ChatScore before = score_heldout(base, 300);
  aji::model::Model trained(aji::toybase::toy_config());
  const ChatScore after = run_sft(Mask::kRight, &trained);
  std::printf("held-out addition: before SFT EM %.3f stop %.3f | after SFT EM %.3f stop %.3f\n", before.em,
              before.stop, after.em, after.stop);
  EXPECT_LE(before.em, 0.05);
  EXPECT_GE(after.stop, 0.98);
  EXPECT_GE(after.em, 0.60);
  // The feedback experiments start from this model: the committed fixture was written here
  // (AJI_WRITE_TOY_SFT=1). Another CPU rounds differently, so compare behaviour, not bits.
  if (const char* w = std::getenv("AJI_WRITE_TOY_SFT"); w && std::string(w) == "1")
    aji::train::save_model_dir(aji::toybase::sft_fixture_dir(), trained, {});
  {
    aji::model::Model fixture = aji::toybase::load_toy_sft();
    const ChatScore f = score_heldout(fixture, 300);
    std::printf("toy SFT fixture: held-out EM %.3f stop %.3f\n", f.em, f.stop);
    EXPECT_GE(f.stop, 0.98);
    EXPECT_GE(f.em, 0.60);
  }
  const ChatScore control = run_sft(Mask::kNoEndOfTurn);
  std::printf("negative control (i) (</a> not supervised): EM %.3f stop %.3f\n", control.em, control.stop);
  EXPECT_LT(control.stop, 0.5);
  const ChatScore shifted = run_sft(Mask::kShifted);
  std::printf("negative control (ii) (mask shifted by one): EM %.3f stop %.3f\n", shifted.em, shifted.stop);
  EXPECT_LT(shifted.em, 0.60) << "a mask off by one position must fail the pass criterion";
  const ChatScore no_start = score_heldout(trained, 300, /*drop_assistant_start=*/true);
  std::printf("negative control (iii) (prompt without <a>): EM %.3f stop %.3f\n", no_start.em, no_start.stop);
  EXPECT_LT(no_start.em, 0.60) << "a prompt that does not follow the template must fail the pass criterion";
}
