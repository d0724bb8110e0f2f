// Scoring requests as lm-eval does, batching, metrics and whole tasks on a tiny random
// model; the references are the model's own unbatched paths (token_logprobs and
// forward_infer through the KV cache), computed here independently of the harness.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "aji/base/error.h"
#include "aji/align/render.h"
#include "aji/eval/harness.h"
#include "aji/eval/report.h"
#include "aji/infer/generate.h"
#include "test_util.h"

namespace {

aji::tokenizer::Tokenizer byte_tok(std::vector<std::string> extra = {}) {
  std::vector<std::string> ranks;
  for (int b = 0; b < 256; ++b) ranks.push_back(std::string(1, static_cast<char>(b)));
  for (auto& e : extra) ranks.push_back(e);
  const uint32_t eot = static_cast<uint32_t>(ranks.size());
  return aji::tokenizer::Tokenizer::from_ranks(ranks, aji::tokenizer::SplitPattern::kGpt2, {{"<|endoftext|>", eot}});
}

aji::model::Model tiny(int vocab = 257, int ctx = 64) {
  aji::model::ModelConfig c;
  c.vocab_size = vocab; c.n_layer = 2; c.n_head = 2; c.n_kv_head = 2; c.d_model = 16; c.d_ff = 32; c.max_seq_len = ctx;
  aji::model::Model m(c);
  m.init_weights(11);
  return m;
}

std::vector<int32_t> ids_of(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

// Σ log p(continuation | context) from token_logprobs, one sequence at a time.
double reference_loglik(aji::model::Model& m, const aji::eval::ScoreRequest& r) {
  std::vector<int32_t> all = r.context;
  all.insert(all.end(), r.continuation.begin(), r.continuation.end());
  auto lp = m.token_logprobs(all.data(), static_cast<int>(all.size()));
  double s = 0;
  for (size_t i = r.context.size(); i < all.size(); ++i) s += lp[i - 1];
  return s;
}

// Greedy reproduction through the KV cache, one token at a time.
bool reference_greedy(aji::model::Model& m, const aji::eval::ScoreRequest& r) {
  auto cache = m.make_cache(1);
  std::vector<float> logits(m.config().vocab_size);
  m.forward_infer(r.context.data(), 1, static_cast<int>(r.context.size()), cache, logits.data());
  for (int32_t want : r.continuation) {
    if (std::max_element(logits.begin(), logits.end()) - logits.begin() != want) return false;
    m.forward_infer(&want, 1, 1, cache, logits.data());
  }
  return true;
}

}  // namespace

TEST(EvalHarness, EncodePairFollowsLmEval) {
  // " b" is one token: lm-eval encodes context + continuation as one string and takes what
  // follows the context's own token count; the context's trailing space moves over.
  auto tok = byte_tok({" b"});
  auto r = aji::eval::encode_pair(tok, "a: ", "b", 7);
  EXPECT_EQ(r.context, (std::vector<int32_t>{7, 'a', ':'}));
  ASSERT_EQ(r.continuation.size(), 1u);
  EXPECT_EQ(tok.token_bytes(static_cast<uint32_t>(r.continuation[0])), " b");
  r = aji::eval::encode_pair(tok, "a:\n", " b", std::nullopt);
  EXPECT_EQ(r.context, (std::vector<int32_t>{'a', ':'}));
  EXPECT_EQ(r.continuation.size(), 2u);  // "\n" and " b"
  // An empty context without BOS starts with the end-of-text token (lm-eval's rule).
  r = aji::eval::encode_pair(tok, "", "xy", std::nullopt, 257);
  EXPECT_EQ(r.context, (std::vector<int32_t>{257}));
  EXPECT_EQ(r.continuation, ids_of("xy"));
  EXPECT_THROW(aji::eval::encode_pair(tok, "", "xy", std::nullopt, std::nullopt), aji::Error);
}

TEST(EvalHarness, BatchedScoresEqualUnbatchedAndTheModelsOwnPaths) {
  auto m = tiny();
  std::vector<aji::eval::ScoreRequest> reqs;
  const char* ctx[] = {"Question: 2+2?\nAnswer:", "The cat", "x", "Hello there, this is a longer context"};
  const char* conts[] = {" 4", " sat on the mat.", "yz", " ok", " no."};
  for (const char* c : ctx)
    for (const char* k : conts) {
      aji::eval::ScoreRequest r{ids_of(c), ids_of(k)};
      r.context.insert(r.context.begin(), 256);
      reqs.push_back(r);
    }
  auto one = aji::eval::score_requests(m, reqs, 1, 1 << 20, true);
  auto many = aji::eval::score_requests(m, reqs, 7, 1 << 20, true);
  auto small_budget = aji::eval::score_requests(m, reqs, 64, 100, true);  // the token budget splits batches
  auto prefix = aji::eval::score_requests_prefix_cache(m, reqs, true);   // shared contexts computed once
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE(i);
    const double ref = reference_loglik(m, reqs[i]);
    EXPECT_NEAR(one[i].sum_logprob, ref, 1e-4);
    EXPECT_NEAR(many[i].sum_logprob, one[i].sum_logprob, 1e-4);
    EXPECT_NEAR(small_budget[i].sum_logprob, one[i].sum_logprob, 1e-4);
    EXPECT_NEAR(prefix[i].sum_logprob, one[i].sum_logprob, 1e-4);
    EXPECT_EQ(prefix[i].n_tokens, one[i].n_tokens);
    EXPECT_EQ(one[i].n_tokens, static_cast<int64_t>(reqs[i].continuation.size()));
    const bool g = reference_greedy(m, reqs[i]);
    EXPECT_EQ(one[i].greedy, g);
    EXPECT_EQ(many[i].greedy, g);
    EXPECT_EQ(prefix[i].greedy, g);
  }
  // A request the model itself would reproduce greedily is reported as such.
  aji::eval::ScoreRequest r{{256, 'a'}, {}};
  for (int k = 0; k < 3; ++k) {
    std::vector<float> logits(257);
    auto cache = m.make_cache(1);
    std::vector<int32_t> all = r.context;
    all.insert(all.end(), r.continuation.begin(), r.continuation.end());
    m.forward_infer(all.data(), 1, static_cast<int>(all.size()), cache, logits.data());
    r.continuation.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  EXPECT_TRUE(aji::eval::score_requests(m, {r}, 4, 1 << 20, true)[0].greedy);
  EXPECT_TRUE(aji::eval::score_requests_prefix_cache(m, {r}, true)[0].greedy);
}

TEST(EvalHarness, MeanStderrIsTheSampleStandardErrorOfTheMean) {
  // values 1,0,1,1: mean 0.75, sample variance (3 * 0.0625 + 0.5625) / 3 = 0.25, stderr 0.5 / 2.
  EXPECT_NEAR(aji::eval::mean_stderr({1, 0, 1, 1}), 0.25, 1e-12);
  EXPECT_EQ(aji::eval::mean_stderr({1}), 0.0);
}

TEST(EvalHarness, MultipleChoiceTaskMatchesPicksFromTokenLogprobsAndCountsTooLongItems) {
  aji::test::TempDir tmp;
  auto tok = byte_tok();
  auto m = tiny();
  const std::vector<std::pair<std::string, std::vector<std::string>>> qs = {
      {"Q: 1+1?\nA:", {"2", "three", "x"}}, {"Sky is", {"blue", "green"}}, {"I like", {"tea", "coffee", "a", "ok"}},
      {"Go", {"left", "right"}}, {std::string(80, 'z'), {"a", "b"}}};  // the last is longer than the context (64)
  std::ofstream f(tmp.path() / "t.jsonl");
  for (size_t i = 0; i < qs.size(); ++i) {
    nlohmann::json j = {{"context", qs[i].first}, {"choices", qs[i].second}, {"gold", static_cast<int>(i % 2)}};
    f << j.dump() << "\n";
  }
  f.close();
  aji::eval::Task t = aji::eval::load_task((tmp.path() / "t.jsonl").string(), tmp.path());
  aji::eval::EvalOptions o;
  o.bos = 256;
  o.batch = 3;
  o.prefix_cache = false;  // the batched path here; the default (prefix cache) path below
  auto res = aji::eval::evaluate_task(m, tok, t, o);
  EXPECT_EQ(res.n, 4);
  EXPECT_EQ(res.too_long, 1);
  double acc = 0, acc_norm = 0;
  for (size_t i = 0; i < 4; ++i) {
    std::vector<double> sums, norms;
    for (const auto& c : qs[i].second) {
      aji::eval::ScoreRequest r{{256}, ids_of(" " + c)};
      auto ctx = ids_of(qs[i].first);
      r.context.insert(r.context.end(), ctx.begin(), ctx.end());
      sums.push_back(reference_loglik(m, r));
      norms.push_back(sums.back() / double(c.size()));  // lm-eval: characters of the choice
    }
    int pred = static_cast<int>(std::max_element(sums.begin(), sums.end()) - sums.begin());
    int pred_norm = static_cast<int>(std::max_element(norms.begin(), norms.end()) - norms.begin());
    EXPECT_EQ(res.items[i]["pred"].get<int>(), pred);
    EXPECT_EQ(res.items[i]["pred_norm"].get<int>(), pred_norm);
    acc += pred == static_cast<int>(i % 2);
    acc_norm += pred_norm == static_cast<int>(i % 2);
  }
  ASSERT_GE(res.metrics.size(), 3u);
  EXPECT_EQ(res.metrics[0].name, "acc");
  EXPECT_NEAR(res.metrics[0].value, acc / 4, 1e-12);
  EXPECT_EQ(res.metrics[1].name, "acc_norm");
  EXPECT_NEAR(res.metrics[1].value, acc_norm / 4, 1e-12);
  // Unbatched gives the same result.
  o.batch = 1;
  auto res1 = aji::eval::evaluate_task(m, tok, t, o);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(res1.items[i]["pred"], res.items[i]["pred"]);
  o.prefix_cache = true;
  auto res2 = aji::eval::evaluate_task(m, tok, t, o);
  for (size_t i = 0; i < 4; ++i)
    for (size_t k = 0; k < qs[i].second.size(); ++k)
      EXPECT_NEAR(res2.items[i]["logliks"][k].get<double>(), res.items[i]["logliks"][k].get<double>(), 1e-4);
  // The report says what was left out.
  std::string md = aji::eval::results_markdown("m", {res});
  EXPECT_NE(md.find("1 items longer than the model's context were left out"), std::string::npos) << md;
}

TEST(EvalHarness, SchemaScoresTheSharedSuffixAndLanguageModelUsesGreedy) {
  aji::test::TempDir tmp;
  auto tok = byte_tok();
  auto m = tiny();
  std::ofstream(tmp.path() / "w.jsonl") << R"({"contexts":["Anna helped Bo so Anna","Anna helped Bo so Bo"],"continuation":"was thanked.","gold":1})"
                                        << "\n";
  aji::eval::EvalOptions o;
  o.bos = 256;
  auto t = aji::eval::load_task((tmp.path() / "w.jsonl").string(), tmp.path());
  auto res = aji::eval::evaluate_task(m, tok, t, o);
  ASSERT_EQ(res.n, 1);
  std::vector<double> ll;
  for (std::string c : {"Anna helped Bo so Anna", "Anna helped Bo so Bo"}) {
    aji::eval::ScoreRequest r{{256}, ids_of(" was thanked.")};
    auto ctx = ids_of(c);
    r.context.insert(r.context.end(), ctx.begin(), ctx.end());
    ll.push_back(reference_loglik(m, r));
  }
  EXPECT_NEAR(res.items[0]["logliks"][0].get<double>(), ll[0], 1e-4);
  EXPECT_NEAR(res.items[0]["logliks"][1].get<double>(), ll[1], 1e-4);
  EXPECT_EQ(res.metrics[0].value, (ll[1] > ll[0]) ? 1.0 : 0.0);

  std::ofstream(tmp.path() / "l.jsonl") << R"({"context":"one two three","target":"four"})" << "\n";
  t = aji::eval::load_task((tmp.path() / "l.jsonl").string(), tmp.path());
  res = aji::eval::evaluate_task(m, tok, t, o);
  aji::eval::ScoreRequest r{{256}, ids_of(" four")};
  auto ctx = ids_of("one two three");
  r.context.insert(r.context.end(), ctx.begin(), ctx.end());
  EXPECT_EQ(res.items[0]["greedy"].get<bool>(), reference_greedy(m, r));
  EXPECT_NEAR(res.items[0]["loglik"].get<double>(), reference_loglik(m, r), 1e-4);
}

TEST(EvalHarness, GenerativeTaskExtractsTheMarkedNumber) {
  aji::test::TempDir tmp;
  auto tok = byte_tok();
  auto m = tiny();
  std::ofstream(tmp.path() / "g.jsonl") << R"({"context":"Question: 1+1?\nAnswer:","target":"2\n#### 2","answer":"2"})"
                                        << "\n";
  auto t = aji::eval::load_task((tmp.path() / "g.jsonl").string(), tmp.path());
  aji::eval::EvalOptions o;
  o.bos = 256;
  o.max_gen_tokens = 8;
  auto res = aji::eval::evaluate_task(m, tok, t, o);
  ASSERT_EQ(res.n, 1);
  // A random model does not write "#### 2": strict exact match is 0, and the record keeps
  // what it generated (at most 8 tokens: one byte each here).
  EXPECT_EQ(res.metrics[0].name, "exact_match");
  EXPECT_EQ(res.metrics[0].value, 0.0);
  EXPECT_LE(res.items[0]["generation"].get<std::string>().size(), 8u);
}

// Generative items are decoded together (--batch rows at a time, prompts of different lengths
// in one batch); each item's generation is the one greedy decoding of that item alone gives
// (infer::generate, cut at the next few-shot "Question:"), whatever the batch.
TEST(EvalHarness, BatchedGenerationEqualsOneItemAtATime) {
  aji::test::TempDir tmp;
  auto tok = byte_tok();
  auto m = tiny();
  {
    std::ofstream f(tmp.path() / "g.jsonl");
    for (int k : {1, 23, 456, 7890, 12, 345678})
      f << nlohmann::json({{"context", "Question: " + std::to_string(k) + "+1?\nAnswer:"},
                           {"target", "#### " + std::to_string(k + 1)},
                           {"answer", std::to_string(k + 1)}})
               .dump()
        << "\n";
  }
  auto t = aji::eval::load_task((tmp.path() / "g.jsonl").string(), tmp.path());
  std::vector<std::string> want;
  for (const auto& it : t.items) {
    std::vector<int32_t> p = {256};
    for (int32_t id : ids_of(it.context)) p.push_back(id);
    aji::infer::GenerateOptions go;
    go.max_tokens = 10;
    go.sampling.temperature = 0.0f;
    std::string text;
    aji::infer::generate(m, p, go, [&](int32_t id) {
      text += tok.token_bytes(static_cast<aji::tokenizer::TokenId>(id));
      return text.find("Question:") == std::string::npos;
    });
    if (auto at = text.find("Question:"); at != std::string::npos) text.resize(at);
    want.push_back(text);
  }
  EXPECT_GT(std::count_if(want.begin(), want.end(), [](const std::string& w) { return !w.empty(); }), 0);
  for (int batch : {1, 4, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    aji::eval::EvalOptions o;
    o.bos = 256;
    o.max_gen_tokens = 10;
    o.batch = batch;
    auto res = aji::eval::evaluate_task(m, tok, t, o);
    ASSERT_EQ(res.n, 6);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(res.items[i]["generation"].get<std::string>(), want[i]) << i;
  }
}

TEST(EvalHarness, ATaskWithNoItemThatFitsReportsNoMetricInsteadOfZero) {
  aji::test::TempDir tmp;
  auto tok = byte_tok();
  auto m = tiny();
  std::ofstream(tmp.path() / "long.jsonl") << nlohmann::json({{"context", std::string(100, 'q')},
                                                              {"choices", {"a", "b"}},
                                                              {"gold", 0}})
                                                  .dump()
                                           << "\n";
  auto t = aji::eval::load_task((tmp.path() / "long.jsonl").string(), tmp.path());
  aji::eval::EvalOptions o;
  o.bos = 256;
  auto res = aji::eval::evaluate_task(m, tok, t, o);
  EXPECT_EQ(res.n, 0);
  EXPECT_EQ(res.too_long, 1);
  EXPECT_TRUE(res.metrics.empty());
  EXPECT_NE(aji::eval::results_table({res}).find("(no item scored)"), std::string::npos);
}

TEST(EvalHarness, ChatModeScoresTheAssistantTurnAfterTheChatTemplate) {
  aji::test::TempDir tmp;
  std::vector<std::string> ranks;
  for (int b = 0; b < 256; ++b) ranks.push_back(std::string(1, static_cast<char>(b)));
  auto tok = aji::tokenizer::Tokenizer::from_ranks(
      ranks, aji::tokenizer::SplitPattern::kGpt2, {{"<|endoftext|>", 256}, {"<|im_start|>", 257}, {"<|im_end|>", 258}});
  auto m = tiny(259, 128);
  std::ofstream(tmp.path() / "c.jsonl") << R"({"context":"Capital of France?","choices":["Paris","Rome"],"gold":0})"
                                        << "\n";
  auto t = aji::eval::load_task((tmp.path() / "c.jsonl").string(), tmp.path());
  aji::eval::EvalOptions o;
  o.chat = true;
  auto res = aji::eval::evaluate_task(m, tok, t, o);
  ASSERT_EQ(res.n, 1);
  std::vector<int32_t> prompt;
  for (auto id : aji::align::render_generation_prompt(tok, {{aji::align::Role::kUser, "Capital of France?"}}))
    prompt.push_back(static_cast<int32_t>(id));
  // The rendered prompt ends with the assistant header; the reply is scored without a delimiter.
  ASSERT_GE(prompt.size(), 11u);
  EXPECT_EQ(prompt[prompt.size() - 11], 257);  // <|im_start|>
  EXPECT_EQ(tok.decode(reinterpret_cast<const uint32_t*>(prompt.data()) + prompt.size() - 10, 10), "assistant\n");
  EXPECT_NEAR(res.items[0]["logliks"][0].get<double>(), reference_loglik(m, {prompt, ids_of("Paris")}), 1e-4);
  EXPECT_NEAR(res.items[0]["logliks"][1].get<double>(), reference_loglik(m, {prompt, ids_of("Rome")}), 1e-4);
  // Without the chat tokens, --chat is a clear error.
  EXPECT_THROW(aji::eval::evaluate_task(m, byte_tok(), t, o), aji::Error);
}

TEST(EvalHarness, CompareReadsRunsBackAndDrawsOneBarPerRunAndTask) {
  aji::test::TempDir tmp;
  aji::eval::TaskResult a;
  a.task = "arc_easy";
  a.n = 10;
  a.metrics = {{"acc", 0.5, 0.1}, {"acc_norm", 0.6, 0.1}};
  aji::eval::TaskResult b = a;
  b.metrics = {{"acc", 0.7, 0.1}, {"acc_norm", 0.8, 0.1}};
  for (auto [name, r] : {std::pair{"base", a}, std::pair{"sft", b}}) {
    std::filesystem::create_directories(tmp.path() / name);
    std::ofstream(tmp.path() / name / "results.json") << aji::eval::results_json("m", {r}, false).dump();
  }
  std::vector<aji::eval::RunSummary> runs = {aji::eval::load_run_summary((tmp.path() / "base").string()),
                                             aji::eval::load_run_summary((tmp.path() / "sft" / "results.json").string())};
  EXPECT_EQ(runs[0].label, "base");
  EXPECT_EQ(runs[1].label, "sft");
  std::string md = aji::eval::compare_markdown(runs);
  EXPECT_NE(md.find("| arc_easy | 0 | acc_norm | 0.6000 ± 0.1000 | 0.8000 ± 0.1000 |"), std::string::npos) << md;
  std::string svg = aji::eval::compare_svg(runs);
  size_t bars = 0;
  for (size_t p = svg.find("<title>"); p != std::string::npos; p = svg.find("<title>", p + 1)) ++bars;
  EXPECT_EQ(bars, 2u);  // acc_norm is the headline metric: one bar per run
  EXPECT_NE(svg.find("sft: 0.8000"), std::string::npos);
  EXPECT_THROW(aji::eval::load_run_summary((tmp.path() / "none").string()), aji::Error);
}
