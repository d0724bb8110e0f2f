// aji's scores of a tiny Hugging Face GPT-2 against lm-evaluation-harness's on the same
// items: tests/fixtures/eval/lm_eval_reference.json was written by
// tests/reference/eval_vs_lm_eval.py (`lm_eval --model hf`, 0-shot, --log_samples).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/eval/harness.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

TEST(EvalVsLmEval, SameLogLikelihoodsAndAccuracyItemForItem) {
  const auto fix = aji::test::source_path("tests/fixtures/eval");
  if (!std::filesystem::exists(fix / "lm_eval_reference.json"))
    GTEST_SKIP() << "tests/fixtures/eval/lm_eval_reference.json is absent (run tests/reference/eval_vs_lm_eval.py)";
  const auto ref = nlohmann::json::parse(aji::read_file(fix / "lm_eval_reference.json"));
  std::filesystem::path dir;
  aji::model::Model model = aji::train::load_model(fix / "hf-gpt2", &dir);
  auto tok = aji::tokenizer::Tokenizer::load(aji::train::require_tokenizer_file(dir, {}));
  // A tiny model: one thread is fastest (no fork/join per small matmul).
  struct OneThread {
    int saved = aji::num_threads();
    OneThread() { aji::set_num_threads(1); }
    ~OneThread() { aji::set_num_threads(saved); }
  } one_thread;
  aji::eval::EvalOptions o;  // lm-eval's hf model: no BOS for GPT-2
  o.eot = static_cast<int32_t>(*tok.special_id("<|endoftext|>"));
  o.batch = 16;
  int64_t checked = 0;
  for (const auto& [name, t] : ref.at("tasks").items()) {
    SCOPED_TRACE(name);
    aji::eval::Task task = aji::eval::load_task(aji::test::source_path(t.at("file").get<std::string>()).string(), fix);
    auto res = aji::eval::evaluate_task(model, tok, task, o);
    const auto& items = t.at("items");
    ASSERT_EQ(res.too_long, 0);
    ASSERT_EQ(res.items.size(), items.size());
    double acc = 0, acc_norm = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& mine = res.items[i];
      const auto& theirs = items[i];
      ASSERT_EQ(mine["index"].get<size_t>(), theirs["doc_id"].get<size_t>());
      ASSERT_EQ(mine["logliks"].size(), theirs["logliks"].size());
      for (size_t k = 0; k < theirs["logliks"].size(); ++k)
        EXPECT_NEAR(mine["logliks"][k].get<double>(), theirs["logliks"][k].get<double>(), 1e-3) << "item " << i;
      const bool a = mine["pred"] == mine["gold"], an = mine["pred_norm"] == mine["gold"];
      EXPECT_EQ(a, theirs["acc"].get<double>() > 0.5) << "item " << i;
      EXPECT_EQ(an, theirs["acc_norm"].get<double>() > 0.5) << "item " << i;
      acc += a;
      acc_norm += an;
      ++checked;
    }
    EXPECT_NEAR(res.metrics[0].value, t.at("acc").get<double>(), 1e-9);
    EXPECT_NEAR(res.metrics[1].value, t.at("acc_norm").get<double>(), 1e-9);
  }
  EXPECT_GE(checked, 150);
}
