// The serving engine against the one-request reference path (infer::generate) and an
// independent log-softmax in double: tokens, log-probabilities, top-k, prompt scoring,
// stops, cancels, the bounded queue, shutdown and determinism beside other requests.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/infer/generate.h"
#include "aji/serve/engine.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

using aji::serve::Engine;
using aji::serve::EngineOptions;
using aji::serve::Finish;
using aji::serve::GenerationRequest;
using aji::serve::TokenEvent;
using aji::test::source_path;

namespace {

aji::model::Model load(const std::string& name) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  return aji::train::load_model(source_path("tests/fixtures/infer/hf-" + name));
}

// What one request produced, collected from its callbacks.
struct Outcome {
  std::vector<TokenEvent> prompt;
  std::vector<TokenEvent> tokens;
  Finish finish = Finish::kError;
  std::string error;
  int done_calls = 0;
  std::vector<int32_t> ids() const {
    std::vector<int32_t> r;
    for (const auto& e : tokens) r.push_back(e.token);
    return r;
  }
};

// Submits a request and lets the test wait for it.
struct Tracked {
  std::shared_ptr<Outcome> out = std::make_shared<Outcome>();
  std::shared_ptr<std::promise<void>> done = std::make_shared<std::promise<void>>();
  std::future<void> fut = done->get_future();
  int64_t id = -1;
  aji::serve::Callbacks callbacks(std::function<bool(const TokenEvent&)> extra = nullptr) {
    auto o = out;
    auto d = done;
    aji::serve::Callbacks cb;
    cb.on_prompt = [o](const std::vector<TokenEvent>& ev) { o->prompt = ev; };
    cb.on_token = [o, extra](const TokenEvent& ev) {
      o->tokens.push_back(ev);
      return extra ? extra(ev) : true;
    };
    cb.on_done = [o, d](Finish f, const std::string& err) {
      o->finish = f;
      o->error = err;
      if (++o->done_calls == 1) d->set_value();
    };
    return cb;
  }
  void wait() { ASSERT_EQ(fut.wait_for(std::chrono::seconds(60)), std::future_status::ready); }
};

Outcome run_one(Engine& e, GenerationRequest r) {
  Tracked t;
  t.id = e.submit(std::move(r), t.callbacks());
  EXPECT_GE(t.id, 1);
  t.wait();
  return *t.out;
}

// log softmax of a logits row in double: the independent reference.
std::vector<double> log_softmax(const float* z, int V) {
  double mx = z[0];
  for (int i = 1; i < V; ++i) mx = std::max(mx, (double)z[i]);
  double s = 0;
  for (int i = 0; i < V; ++i) s += std::exp((double)z[i] - mx);
  std::vector<double> r(static_cast<size_t>(V));
  for (int i = 0; i < V; ++i) r[static_cast<size_t>(i)] = (double)z[i] - mx - std::log(s);
  return r;
}

// Every event's logprob and top-k checked against the logits of a full forward pass over
// `seq` (the row predicting seq[pos+1] at pos).
void check_events(aji::model::Model& m, const std::vector<int32_t>& seq, const std::vector<TokenEvent>& ev,
                  size_t first_pos, int k) {
  const int V = m.config().vocab_size, C = m.config().d_model;
  const int T = static_cast<int>(seq.size());
  m.forward(seq.data(), 1, T);
  std::vector<float> logits(static_cast<size_t>(V));
  for (size_t i = 0; i < ev.size(); ++i) {
    const size_t pos = first_pos + i;  // ev[i] is token seq[pos + 1]
    m.lm_logits(m.hidden() + pos * C, 1, logits.data());
    const auto ref = log_softmax(logits.data(), V);
    EXPECT_EQ(ev[i].token, seq[pos + 1]);
    EXPECT_NEAR(ev[i].logprob, ref[static_cast<size_t>(seq[pos + 1])], 1e-4) << "position " << pos;
    ASSERT_EQ(static_cast<int>(ev[i].top.size()), k);
    std::vector<int> order(static_cast<size_t>(V));
    for (int v = 0; v < V; ++v) order[static_cast<size_t>(v)] = v;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ref[a] > ref[b]; });
    for (int j = 0; j < k; ++j) {
      EXPECT_NEAR(ev[i].top[j].logprob, ref[static_cast<size_t>(ev[i].top[j].token)], 1e-4);
      EXPECT_NEAR(ev[i].top[j].logprob, ref[static_cast<size_t>(order[static_cast<size_t>(j)])], 1e-4);
      if (j > 0) {
        EXPECT_GE(ev[i].top[j - 1].logprob, ev[i].top[j].logprob);
      }
      // the picked token among the alternatives carries the very same float
      if (ev[i].top[j].token == ev[i].token) {
        EXPECT_EQ(ev[i].top[j].logprob, ev[i].logprob);
      }
    }
  }
}

}  // namespace

TEST(ServeEngine, TokensEqualGenerateGreedyAndSampled) {
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = load(name);
    auto ref = load(name);
    Engine e(m, {});
    const std::vector<int32_t> prompt = {5, 17, 33, 2, 90, 41, 7};
    for (float temp : {0.0f, 1.0f}) {
      aji::infer::GenerateOptions o;
      o.max_tokens = 20;
      o.sampling.temperature = temp;
      o.sampling.top_p = temp > 0 ? 0.9f : 1.0f;
      o.seed = 77;
      const auto want = aji::infer::generate(ref, prompt, o);
      GenerationRequest r;
      r.prompt = prompt;
      r.max_tokens = 20;
      r.sampling = o.sampling;
      r.seed = 77;
      r.top_logprobs = 3;
      const Outcome got = run_one(e, r);
      EXPECT_EQ(got.finish, Finish::kLength);
      EXPECT_EQ(got.done_calls, 1);
      EXPECT_EQ(got.ids(), want);
      EXPECT_TRUE(got.prompt.empty());  // no score_prompt: no on_prompt
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), want.begin(), want.end());
      check_events(ref, seq, got.tokens, prompt.size() - 1, 3);
      if (temp == 0.0f) {
        for (const auto& ev : got.tokens) EXPECT_EQ(ev.top[0].token, ev.token);  // greedy = argmax
      }
    }
  }
}

TEST(ServeEngine, ScorePromptEqualsTokenLogprobsBitForBit) {
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = load(name);
    auto ref = load(name);
    Engine e(m, {});
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % 96);
    const auto lp = ref.token_logprobs(prompt.data(), static_cast<int>(prompt.size()));  // what `aji score` uses
    for (int max_tokens : {0, 1}) {
      GenerationRequest r;
      r.prompt = prompt;
      r.max_tokens = max_tokens;
      r.sampling.temperature = 0.0f;
      r.top_logprobs = 2;
      r.score_prompt = true;
      const Outcome got = run_one(e, r);
      ASSERT_EQ(got.prompt.size(), prompt.size());
      EXPECT_EQ(got.prompt[0].token, prompt[0]);
      EXPECT_TRUE(std::isnan(got.prompt[0].logprob));
      EXPECT_TRUE(got.prompt[0].top.empty());
      for (size_t i = 1; i < prompt.size(); ++i) EXPECT_EQ(got.prompt[i].logprob, lp[i - 1]) << i;
      check_events(ref, prompt, {got.prompt.begin() + 1, got.prompt.end()}, 0, 2);
      EXPECT_EQ(got.finish, Finish::kLength);
      EXPECT_EQ(static_cast<int>(got.tokens.size()), max_tokens);
    }
    // one prompt token: one event, nothing to score
    GenerationRequest r;
    r.prompt = {3};
    r.max_tokens = 0;
    r.score_prompt = true;
    const Outcome one = run_one(e, r);
    ASSERT_EQ(one.prompt.size(), 1u);
    EXPECT_TRUE(std::isnan(one.prompt[0].logprob));
  }
}

TEST(ServeEngine, StopTokenContextLimitAndCallbackCancel) {
  auto m = load("llama");
  auto ref = load("llama");
  EngineOptions opt;
  opt.context = 32;
  Engine e(m, opt);
  EXPECT_EQ(e.context(), 32);
  const std::vector<int32_t> prompt = {5, 17, 33, 2, 90};
  aji::infer::GenerateOptions o;
  o.max_tokens = 10;
  o.sampling.temperature = 0.0f;
  const auto full = aji::infer::generate(ref, prompt, o);
  GenerationRequest r;
  r.prompt = prompt;
  r.sampling.temperature = 0.0f;
  r.max_tokens = 10;
  r.stop_tokens = {full[3]};
  Outcome got = run_one(e, r);
  EXPECT_EQ(got.finish, Finish::kStop);
  ASSERT_LE(got.tokens.size(), 4u);
  EXPECT_EQ(got.tokens.back().token, full[3]);
  // the engine's context (32), not the model's (64), bounds the output
  r.stop_tokens.clear();
  r.max_tokens = 1000;
  got = run_one(e, r);
  EXPECT_EQ(got.finish, Finish::kLength);
  EXPECT_EQ(got.tokens.size(), 32u - prompt.size());
  // on_token returning false cancels
  Tracked t;
  t.id = e.submit(r, t.callbacks([](const TokenEvent&) { return false; }));
  t.wait();
  EXPECT_EQ(t.out->finish, Finish::kCancelled);
  EXPECT_EQ(t.out->tokens.size(), 1u);
  EXPECT_EQ(t.out->done_calls, 1);
}

TEST(ServeEngine, InvalidRequestsNameTheField) {
  auto m = load("llama");
  Engine e(m, {});
  auto expect_error = [&](GenerationRequest r, const std::string& word) {
    try {
      e.submit(std::move(r), {});
      ADD_FAILURE() << "no error for " << word;
    } catch (const aji::Error& err) {
      EXPECT_NE(std::string(err.what()).find(word), std::string::npos) << err.what();
    }
  };
  GenerationRequest ok;
  ok.prompt = {1, 2, 3};
  GenerationRequest r = ok;
  r.prompt.clear();
  expect_error(r, "prompt");
  r = ok;
  r.prompt.assign(64, 1);
  expect_error(r, "prompt has 64 tokens; the context is 64");
  r = ok;
  r.prompt[1] = 96;
  expect_error(r, "vocabulary");
  r = ok;
  r.max_tokens = -1;
  expect_error(r, "max_tokens");
  r = ok;
  r.top_logprobs = -2;
  expect_error(r, "top_logprobs");
  r = ok;
  r.sampling.top_p = 0.0f;
  expect_error(r, "top-p");
  EXPECT_THROW(Engine(m, EngineOptions{0, 4, 0}), aji::Error);
}

// The engine thread is held inside a callback, so the queue fills deterministically.
TEST(ServeEngine, BoundedQueueCancelAndShutdown) {
  auto m = load("llama");
  EngineOptions opt;
  opt.max_batch = 1;
  opt.max_queue = 2;
  Engine e(m, opt);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, entered = false;
  GenerationRequest r;
  r.prompt = {5, 6, 7};
  r.max_tokens = 3;
  Tracked blocker;
  blocker.id = e.submit(r, blocker.callbacks([&](const TokenEvent&) {
    std::unique_lock<std::mutex> lk(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lk, [&] { return release; });
    return true;
  }));
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return entered; });
  }
  Tracked a, b, c;
  a.id = e.submit(r, a.callbacks());
  b.id = e.submit(r, b.callbacks());
  c.id = e.submit(r, c.callbacks());
  EXPECT_GT(a.id, blocker.id);
  EXPECT_GT(b.id, a.id);
  EXPECT_EQ(c.id, -1);  // two already waiting
  auto s = e.stats();
  EXPECT_EQ(s.queued, 2);
  EXPECT_EQ(s.max_batch, 1);
  e.cancel(a.id);
  e.cancel(12345);  // unknown: ignored
  {
    std::lock_guard<std::mutex> lk(mu);
    release = true;
  }
  cv.notify_all();
  a.wait();
  b.wait();
  blocker.wait();
  EXPECT_EQ(a.out->finish, Finish::kCancelled);
  EXPECT_TRUE(a.out->tokens.empty());
  EXPECT_EQ(b.out->finish, Finish::kLength);
  EXPECT_EQ(b.out->tokens.size(), 3u);
  EXPECT_EQ(blocker.out->finish, Finish::kLength);
  s = e.stats();
  EXPECT_EQ(s.requests_finished, 3u);
  EXPECT_EQ(s.generated_tokens, 6u);
  EXPECT_EQ(s.prompt_tokens, 6u);
  EXPECT_EQ(s.queued, 0);
  e.cancel(b.id);  // finished: ignored

  // a long request cancelled while it runs: its first token holds the engine until the
  // test has called cancel(), which then takes effect at the next step
  GenerationRequest longr = r;
  longr.max_tokens = 50;
  bool first = false, cancelled = false;
  Tracked l;
  l.id = e.submit(longr, l.callbacks([&](const TokenEvent&) {
    std::unique_lock<std::mutex> lk(mu);
    first = true;
    cv.notify_all();
    cv.wait(lk, [&] { return cancelled; });
    return true;
  }));
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return first; });
    e.cancel(l.id);
    cancelled = true;
  }
  cv.notify_all();
  l.wait();
  EXPECT_EQ(l.out->finish, Finish::kCancelled);
  EXPECT_EQ(l.out->tokens.size(), 1u);

  // shutdown(true) finishes the queued work; then nothing is accepted
  Tracked f1, f2;
  f1.id = e.submit(longr, f1.callbacks());
  f2.id = e.submit(longr, f2.callbacks());
  e.shutdown(true);
  EXPECT_EQ(f1.out->finish, Finish::kLength);
  EXPECT_EQ(f2.out->finish, Finish::kLength);
  EXPECT_EQ(f2.out->tokens.size(), 50u);
  EXPECT_EQ(e.submit(r, {}), -1);
  e.shutdown(false);  // idempotent
}

TEST(ServeEngine, ShutdownWithoutFinishingCancelsEverything) {
  auto m = load("gpt2");
  EngineOptions opt;
  opt.max_batch = 2;
  std::vector<Tracked> ts(6);
  {
    Engine e(m, opt);
    GenerationRequest r;
    r.prompt = {1, 2, 3, 4};
    r.max_tokens = 50;
    for (auto& t : ts) t.id = e.submit(r, t.callbacks());
    // the destructor is shutdown(false)
  }
  int cancelled = 0;
  for (auto& t : ts) {
    t.wait();
    EXPECT_EQ(t.out->done_calls, 1);
    EXPECT_TRUE(t.out->finish == Finish::kCancelled || t.out->finish == Finish::kLength);
    cancelled += t.out->finish == Finish::kCancelled;
  }
  EXPECT_GT(cancelled, 0);
}

// A seeded request gives the same tokens alone and beside 7 others with different prompt
// lengths that join at different times.
TEST(ServeEngine, SeededRequestIsTheSameAloneAndInABatch) {
  // with the fp32 and the bf16 KV cache (--kv-cache bf16)
  for (auto kv : {aji::model::KVCacheType::kF32, aji::model::KVCacheType::kBF16}) {
    for (std::string name : {"llama", "gpt2"}) {
      SCOPED_TRACE(name + " cache " + aji::model::kv_cache_type_name(kv));
      auto m = load(name);
      m.set_kv_cache(kv);
      EngineOptions opt;
      opt.max_batch = 8;
      Engine e(m, opt);
      auto make = [](int i) {
        GenerationRequest r;
        for (int j = 0; j < 3 + 4 * i; ++j) r.prompt.push_back((j * 13 + i * 7 + 1) % 96);
        r.max_tokens = 24;
        r.sampling.temperature = 0.9f;
        r.sampling.top_k = 40;
        r.seed = 1000 + i;
        r.top_logprobs = 1;
        return r;
      };
      std::vector<std::vector<int32_t>> alone;
      for (int i = 0; i < 8; ++i) alone.push_back(run_one(e, make(i)).ids());
      const auto before = e.stats();
      std::vector<Tracked> ts(8);
      // Request 0 holds the engine at its first token until requests 1 and 2 are queued, so
      // they certainly share its decode steps, however loaded the machine (the others join
      // whenever they come).
      std::promise<void> third_in;
      std::shared_future<void> gate = third_in.get_future().share();
      auto first = std::make_shared<bool>(true);
      for (int i = 0; i < 8; ++i) {
        auto hold = [gate, first](const TokenEvent&) {
          if (*first) {
            *first = false;
            gate.wait_for(std::chrono::seconds(10));
          }
          return true;
        };
        ts[i].id = e.submit(make(i), i == 0 ? ts[i].callbacks(hold) : ts[i].callbacks());
        if (i == 2) third_in.set_value();
        if (i % 3 == 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // join mid-decode
      }
      for (int i = 0; i < 8; ++i) {
        ts[i].wait();
        EXPECT_EQ(ts[i].out->ids(), alone[i]) << "request " << i;
      }
      const auto s = e.stats();
      EXPECT_EQ(s.requests_finished, 16u);
      EXPECT_EQ(s.generated_tokens, 16u * 24u);
      // they really shared the decode batch (one prefill per step: the batch grows by one a step)
      const double rows_per_step =
          double(s.decode_rows - before.decode_rows) / double(s.decode_steps - before.decode_steps);
      EXPECT_GT(rows_per_step, 1.0);  // > 2 on a quiet machine; 0, 1 and 2 overlap on any
      EXPECT_EQ(before.decode_rows, before.decode_steps);  // alone: one row a step
    }
  }
}

// shutdown() from a callback (the engine thread) does not wait for itself: it returns and
// the engine stops after the step, cancelling what is left.
TEST(ServeEngine, ShutdownFromACallback) {
  auto m = load("llama");
  Engine e(m, {});
  GenerationRequest r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 30;
  Tracked t;
  t.id = e.submit(r, t.callbacks([&](const TokenEvent&) {
    e.shutdown(false);
    return true;
  }));
  t.wait();
  EXPECT_EQ(t.out->finish, Finish::kCancelled);
  EXPECT_LE(t.out->tokens.size(), 2u);
  e.shutdown(true);  // joins the engine thread, which has ended
  EXPECT_EQ(e.submit(r, {}), -1);
}

// Prompts waiting together: with nothing decoding (a burst) they are prefilled in one step,
// every first token before anyone's second; while a request decodes, each step feeds half of
// the waiting ones (rounded up), so four that arrive together get their first tokens over
// three steps (2, 1, 1) and the running request keeps getting a token every step.
TEST(ServeEngine, PromptsArrivingTogetherAreFedAtOnceWhenIdleAndSpreadWhileDecoding) {
  for (const bool decoding : {false, true}) {
    SCOPED_TRACE(decoding ? "request 0 decoding" : "idle");
    auto m = load("llama");
    EngineOptions opt;
    opt.max_batch = 8;
    Engine e(m, opt);
    std::mutex mu;
    std::condition_variable cv;
    bool release = false, entered = false;
    std::vector<std::pair<int, int>> order;  // (request, token index), engine thread only
    GenerationRequest r;
    r.prompt = {5, 6, 7, 8};
    r.max_tokens = 3;
    std::vector<Tracked> ts(5);
    auto log = [&](int who) {
      return [&, who](const TokenEvent&) {
        int n = 0;
        for (const auto& o : order) n += o.first == who;
        order.push_back({who, n});
        return true;
      };
    };
    // Request 0 holds the engine at its first token until the four others are queued; it
    // ends there (idle case) or goes on decoding.
    GenerationRequest r0 = r;
    r0.max_tokens = decoding ? 8 : 1;
    ts[0].id = e.submit(r0, ts[0].callbacks([&](const TokenEvent& ev) {
      std::unique_lock<std::mutex> lk(mu);
      if (!entered) {
        entered = true;
        cv.notify_all();
        cv.wait(lk, [&] { return release; });
      }
      return log(0)(ev);
    }));
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return entered; });
    }
    for (int i = 1; i < 5; ++i) ts[i].id = e.submit(r, ts[i].callbacks(log(i)));
    {
      std::lock_guard<std::mutex> lk(mu);
      release = true;
    }
    cv.notify_all();
    for (auto& t : ts) t.wait();
    for (const auto& t : ts) EXPECT_EQ(t.out->finish, Finish::kLength);
    ASSERT_EQ(order.size(), decoding ? 20u : 13u);
    if (!decoding) {
      for (size_t i = 0; i < 5; ++i) EXPECT_EQ(order[i].second, 0) << "event " << i;
      continue;
    }
    // tokens of request 0 emitted before each newcomer's first token
    std::vector<int> before;
    for (int who = 1; who < 5; ++who) {
      int n = 0;
      for (const auto& o : order) {
        if (o.first == who) break;
        n += o.first == 0;
      }
      before.push_back(n);
    }
    EXPECT_EQ(before, (std::vector<int>{1, 1, 2, 3}));
  }
}

// A prompt longer than one step's prefill budget (600 tokens: chunks of 256, 256, 88) fed
// while short requests decode beside it, in the same passes (Model::forward_extend): its
// tokens are those it gets alone, and every generated token's log-probability is the full
// forward's (an independent path: one pass over the whole sequence, GEMM products).
TEST(ServeEngine, ALongPromptFedInChunksBesideRunningRequestsIsUnchanged) {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 96;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 32;
  c.d_ff = 48;
  c.max_seq_len = 640;
  c.init_std = 0.3f;
  aji::model::Model m(c);
  m.init_weights(21);
  aji::model::Model ref(c);
  ref.init_weights(21);
  EngineOptions opt;
  opt.max_batch = 4;
  Engine e(m, opt);
  GenerationRequest longr;
  for (int j = 0; j < 600; ++j) longr.prompt.push_back((j * 37 + 11) % 96);
  longr.max_tokens = 12;
  longr.sampling.temperature = 0.8f;
  longr.seed = 5;
  longr.top_logprobs = 2;
  auto shortr = [](int i) {
    GenerationRequest r;
    for (int j = 0; j < 5 + i; ++j) r.prompt.push_back((j * 7 + i) % 96);
    r.max_tokens = 30;
    r.sampling.temperature = 1.0f;
    r.seed = 100 + i;
    return r;
  };
  const Outcome alone = run_one(e, longr);
  ASSERT_EQ(alone.finish, Finish::kLength);
  std::vector<std::vector<int32_t>> short_alone;
  for (int i = 0; i < 3; ++i) short_alone.push_back(run_one(e, shortr(i)).ids());
  std::vector<Tracked> ts(4);
  for (int i = 0; i < 3; ++i) ts[i].id = e.submit(shortr(i), ts[i].callbacks());
  std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the short ones are decoding (on a quiet machine)
  ts[3].id = e.submit(longr, ts[3].callbacks());
  for (auto& t : ts) t.wait();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ts[i].out->ids(), short_alone[i]) << "short request " << i;
  EXPECT_EQ(ts[3].out->ids(), alone.ids());
  std::vector<int32_t> seq = longr.prompt;
  const auto ids = alone.ids();
  seq.insert(seq.end(), ids.begin(), ids.end());
  check_events(ref, seq, alone.tokens, longr.prompt.size() - 1, 2);
}
