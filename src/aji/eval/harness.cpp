#include "aji/eval/harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "aji/align/render.h"
#include "aji/align/verifiers.h"
#include "aji/base/error.h"
#include "aji/eval/multiple_choice.h"
#include "aji/infer/rollout.h"

namespace aji::eval {

namespace {

std::vector<int32_t> encode_text(const tokenizer::Tokenizer& tok, const std::string& s) {
  std::vector<int32_t> out;
  for (auto id : tok.encode(s, tokenizer::SpecialPolicy::kAsText)) out.push_back(static_cast<int32_t>(id));
  return out;
}

int64_t utf8_chars(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool is_py_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

}  // namespace

ScoreRequest encode_pair(const tokenizer::Tokenizer& tok, const std::string& context, const std::string& continuation,
                         std::optional<int32_t> bos, std::optional<int32_t> empty_context_token) {
  size_t end = context.size();
  while (end > 0 && is_py_space(static_cast<unsigned char>(context[end - 1]))) --end;
  const std::string ctx = context.substr(0, end);
  const std::string cont = context.substr(end) + continuation;
  std::vector<int32_t> whole = encode_text(tok, ctx + cont);
  std::vector<int32_t> c = encode_text(tok, ctx);
  ScoreRequest r;
  if (bos) r.context.push_back(*bos);
  if (c.empty() && !bos) {
    if (!empty_context_token) throw Error("an empty context cannot be scored without a BOS or end-of-text token");
    r.context.push_back(*empty_context_token);
    r.continuation = encode_text(tok, cont);  // lm-eval: [eot] + encode(continuation)
    return r;
  }
  r.context.insert(r.context.end(), c.begin(), c.end());
  if (whole.size() > c.size()) r.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(c.size()), whole.end());
  return r;
}

std::vector<RequestScore> score_requests(model::Model& model, const std::vector<ScoreRequest>& requests, int batch,
                                         int64_t batch_tokens, bool want_greedy) {
  const int max_len = model.config().max_seq_len;
  const int V = model.config().vocab_size;
  const int C = model.config().d_model;
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto len = [&](size_t i) { return requests[i].context.size() + requests[i].continuation.size(); };
  for (size_t i : order) {
    if (requests[i].context.empty() || requests[i].continuation.empty())
      throw Error("a scoring request needs a non-empty context and continuation");
    if (len(i) > static_cast<size_t>(max_len))
      throw Error("a request of " + std::to_string(len(i)) + " tokens exceeds the model's context of " +
                  std::to_string(max_len))
          .fix("use fewer shots or shorter items");
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len(a) > len(b); });
  std::vector<RequestScore> out(requests.size());
  std::vector<int32_t> tokens, targets;
  std::vector<float> lp, rows, logits;
  batch = std::max(batch, 1);
  for (size_t i = 0; i < order.size();) {
    const int T = static_cast<int>(len(order[i]));
    int B = static_cast<int>(std::min<int64_t>({int64_t(batch), std::max<int64_t>(1, batch_tokens / T),
                                                int64_t(order.size() - i)}));
    tokens.assign(size_t(B) * T, 0);
    targets.assign(size_t(B) * T, -1);
    for (int b = 0; b < B; ++b) {
      const ScoreRequest& r = requests[order[i + b]];
      int32_t* row = tokens.data() + size_t(b) * T;
      std::copy(r.context.begin(), r.context.end(), row);
      std::copy(r.continuation.begin(), r.continuation.end(), row + r.context.size());
      const size_t n = r.context.size() + r.continuation.size();
      for (size_t t = r.context.size() - 1; t + 1 < n; ++t) targets[size_t(b) * T + t] = row[t + 1];
    }
    model.forward(tokens.data(), B, T);
    lp.assign(size_t(B) * T, 0.0f);
    model.lm_head_logprobs(targets.data(), lp.data());
    for (int b = 0; b < B; ++b) {
      const ScoreRequest& r = requests[order[i + b]];
      RequestScore& s = out[order[i + b]];
      const size_t first = r.context.size() - 1, n = r.continuation.size();
      for (size_t t = first; t < first + n; ++t) s.sum_logprob += lp[size_t(b) * T + t];
      s.n_tokens = static_cast<int64_t>(n);
      if (want_greedy) {
        const float* h = model.hidden() + (size_t(b) * T + first) * C;
        rows.assign(h, h + n * C);
        logits.resize(n * size_t(V));
        model.lm_logits(rows.data(), static_cast<int>(n), logits.data());
        s.greedy = true;
        for (size_t k = 0; k < n && s.greedy; ++k) {
          const float* l = logits.data() + k * V;
          s.greedy = static_cast<int32_t>(std::max_element(l, l + V) - l) == r.continuation[k];
        }
      }
    }
    i += B;
  }
  return out;
}

std::vector<RequestScore> score_requests_prefix_cache(model::Model& model, const std::vector<ScoreRequest>& requests,
                                                      bool want_greedy) {
  const int max_len = model.config().max_seq_len;
  std::vector<RequestScore> out(requests.size());
  // items: runs of requests with the same context (the choices of one item)
  struct Item {
    size_t first, end;  // requests [first, end)
    int pre;            // context tokens but the last, fed once through the item's cache
    int rows;           // scored rows: sum over choices of their continuation lengths
  };
  std::vector<Item> items;
  for (size_t i = 0; i < requests.size();) {
    size_t j = i + 1;
    while (j < requests.size() && requests[j].context == requests[i].context) ++j;
    const auto& ctx = requests[i].context;
    Item it{i, j, static_cast<int>(ctx.size()) - 1, 0};
    for (size_t r = i; r < j; ++r) {
      if (ctx.empty() || requests[r].continuation.empty())
        throw Error("a scoring request needs a non-empty context and continuation");
      if (ctx.size() + requests[r].continuation.size() > static_cast<size_t>(max_len))
        throw Error("a request exceeds the model's context of " + std::to_string(max_len))
            .fix("use fewer shots or shorter items");
      it.rows += static_cast<int>(requests[r].continuation.size());
    }
    items.push_back(it);
    i = j;
  }
  // Items in groups of about kPassTokens tokens (contexts and choices each): one pass feeds
  // every context of the group (but its last token) into its own cache; each choice then
  // takes a copy of its item's cache, and one pass over every choice of the group feeds
  // [last context token, continuation but its last token] and scores each continuation token
  // at the position before it. Items of different context lengths share the passes (the
  // caches are per sequence), so the products see hundreds of rows, not one item's few.
  constexpr int kPassTokens = 2048;
  std::vector<int32_t> toks, targets;
  std::vector<int> counts;
  std::vector<float> lp, last;
  std::vector<uint8_t> top;
  std::vector<model::KVCache> ctx_caches, choice_caches;
  std::vector<model::KVCache*> ptrs;
  for (size_t g0 = 0; g0 < items.size();) {
    size_t g1 = g0;
    int64_t pre_sum = 0, row_sum = 0;
    while (g1 < items.size() &&
           (g1 == g0 || (pre_sum + items[g1].pre <= kPassTokens && row_sum + items[g1].rows <= kPassTokens))) {
      pre_sum += items[g1].pre;
      row_sum += items[g1].rows;
      ++g1;
    }
    // the contexts
    ctx_caches.clear();
    ctx_caches.reserve(g1 - g0);  // no reallocation: ptrs point into it
    toks.clear();
    counts.clear();
    ptrs.clear();
    for (size_t k = g0; k < g1; ++k) {
      const Item& it = items[k];
      ctx_caches.push_back(model.make_cache(1, std::max(it.pre, 1)));
      if (it.pre == 0) continue;  // a one-token context: nothing to feed before the choices
      const auto& ctx = requests[it.first].context;
      toks.insert(toks.end(), ctx.begin(), ctx.begin() + it.pre);
      counts.push_back(it.pre);
      ptrs.push_back(&ctx_caches.back());
    }
    if (!ptrs.empty()) {
      last.resize(ptrs.size() * static_cast<size_t>(model.config().vocab_size));
      model.forward_extend(toks.data(), counts.data(), static_cast<int>(ptrs.size()), ptrs.data(), last.data(),
                           /*batch_invariant=*/false);
    }
    // the choices
    choice_caches.clear();
    toks.clear();
    targets.clear();
    counts.clear();
    for (size_t k = g0; k < g1; ++k) {
      const Item& it = items[k];
      const auto& ctx = requests[it.first].context;
      for (size_t r = it.first; r < it.end; ++r) {
        const auto& c = requests[r].continuation;
        choice_caches.push_back(model.repeat_cache(ctx_caches[k - g0], 1, it.pre + static_cast<int>(c.size())));
        toks.push_back(ctx.back());
        toks.insert(toks.end(), c.begin(), c.end() - 1);
        targets.insert(targets.end(), c.begin(), c.end());
        counts.push_back(static_cast<int>(c.size()));
      }
    }
    ptrs.clear();
    for (auto& kv : choice_caches) ptrs.push_back(&kv);
    lp.assign(toks.size(), 0.0f);
    top.assign(toks.size(), 0);
    model.forward_extend(toks.data(), counts.data(), static_cast<int>(ptrs.size()), ptrs.data(), targets.data(),
                         lp.data(), want_greedy ? top.data() : nullptr);
    size_t at = 0;
    for (size_t k = g0; k < g1; ++k)
      for (size_t r = items[k].first; r < items[k].end; ++r) {
        const auto& c = requests[r].continuation;
        RequestScore& s = out[r];
        s.n_tokens = static_cast<int64_t>(c.size());
        s.greedy = true;
        for (size_t t = 0; t < c.size(); ++t, ++at) {
          s.sum_logprob += lp[at];
          if (want_greedy) s.greedy = s.greedy && top[at];
        }
      }
    g0 = g1;
  }
  return out;
}

double mean_stderr(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  double m = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / double(v.size() - 1)) / std::sqrt(double(v.size()));
}

nlohmann::json TaskResult::to_json(bool with_items) const {
  nlohmann::json j = {{"task", task},         {"kind", kind},       {"shots", shots},
                      {"chat", chat},         {"n", n},             {"too_long", too_long},
                      {"requests", requests}, {"seconds", seconds}, {"items_per_s", items_per_s()}};
  nlohmann::json m = nlohmann::json::object();
  for (const auto& x : metrics) m[x.name] = {{"value", x.value}, {"stderr", x.stderr_}};
  j["metrics"] = m;
  if (with_items) j["items"] = items;
  return j;
}

namespace {

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

Metric metric(const std::string& name, const std::vector<double>& v, double baseline = -1) {
  Metric m{name, mean(v), mean_stderr(v)};
  if (baseline >= 0) {
    m.value = centered_accuracy(m.value, baseline);
    m.stderr_ /= (1.0 - baseline);
  }
  return m;
}

}  // namespace

TaskResult evaluate_task(model::Model& model, const tokenizer::Tokenizer& tok, const Task& task,
                         const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const TaskSpec& spec = task.spec;
  if (o.chat) align::require_chat_tokens(tok);
  TaskResult res;
  res.task = spec.name;
  res.kind = task_kind_name(spec.kind);
  res.shots = o.shots;
  res.chat = o.chat;
  const size_t n_items =
      o.limit >= 0 ? std::min(task.items.size(), static_cast<size_t>(o.limit)) : task.items.size();
  const size_t max_len = static_cast<size_t>(model.config().max_seq_len);

  // Base: (context, continuation) as lm-eval. Chat: the user turn holds the few-shot text
  // and the question, the continuation is the assistant's reply.
  auto make_request = [&](const std::string& context, const std::string& continuation) {
    if (!o.chat) return encode_pair(tok, context, spec.delimiter + continuation, o.bos, o.eot);
    ScoreRequest r;
    for (auto id : align::render_generation_prompt(tok, {{align::Role::kUser, context}}))
      r.context.push_back(static_cast<int32_t>(id));
    r.continuation = encode_text(tok, continuation);
    return r;
  };

  struct Pending {
    size_t item;
    size_t first, count;  // requests[first, first + count)
  };
  std::vector<ScoreRequest> requests;
  std::vector<Pending> pending;
  std::vector<std::vector<int32_t>> gen_prompts;
  std::vector<size_t> gen_items;
  for (size_t i = 0; i < n_items; ++i) {
    const TaskItem& it = task.items[i];
    const std::string prefix =
        fewshot_prefix(task, fewshot_indices(task.fewshot.size(), o.shots, i, task.fewshot_is_items, o.seed));
    if (spec.kind == TaskKind::kGenerative) {
      std::vector<int32_t> p;
      if (o.chat) {
        for (auto id : align::render_generation_prompt(tok, {{align::Role::kUser, prefix + it.context}}))
          p.push_back(static_cast<int32_t>(id));
      } else {
        if (o.bos) p.push_back(*o.bos);
        auto e = encode_text(tok, prefix + it.context);
        p.insert(p.end(), e.begin(), e.end());
      }
      if (p.size() >= max_len) {
        ++res.too_long;
        continue;
      }
      gen_prompts.push_back(std::move(p));
      gen_items.push_back(i);
      continue;
    }
    std::vector<ScoreRequest> reqs;
    if (spec.kind == TaskKind::kMultipleChoice) {
      for (const auto& c : it.choices) reqs.push_back(make_request(prefix + it.context, c));
    } else if (spec.kind == TaskKind::kSchema) {
      for (const auto& c : it.choices) reqs.push_back(make_request(prefix + c, it.continuation));
    } else {
      reqs.push_back(make_request(prefix + it.context, it.continuation));
    }
    bool fits = true;
    for (const auto& r : reqs) {
      if (r.continuation.empty())
        throw Error("a continuation encodes to no tokens").at(spec.file, it.line).fix("give non-empty choices");
      fits = fits && r.context.size() + r.continuation.size() <= max_len;
    }
    if (!fits) {
      ++res.too_long;
      continue;
    }
    pending.push_back({i, requests.size(), reqs.size()});
    for (auto& r : reqs) requests.push_back(std::move(r));
  }

  std::vector<double> acc, acc_norm, core, flexible;
  double baseline = 0;
  if (!requests.empty()) {
    const bool greedy = spec.kind == TaskKind::kLanguageModel;
    std::vector<RequestScore> scores = o.prefix_cache ? score_requests_prefix_cache(model, requests, greedy)
                                                      : score_requests(model, requests, o.batch, o.batch_tokens, greedy);
    for (const Pending& p : pending) {
      const TaskItem& it = task.items[p.item];
      nlohmann::json rec = {{"index", p.item}, {"line", it.line}};
      if (spec.kind == TaskKind::kLanguageModel) {
        const RequestScore& s = scores[p.first];
        acc.push_back(s.greedy ? 1.0 : 0.0);
        rec["loglik"] = s.sum_logprob;
        rec["greedy"] = s.greedy;
      } else {
        std::vector<ChoiceScore> cs;
        std::vector<double> ll;
        for (size_t k = 0; k < p.count; ++k) {
          const RequestScore& s = scores[p.first + k];
          const std::string& text = spec.kind == TaskKind::kMultipleChoice ? it.choices[k] : it.continuation;
          cs.push_back({s.sum_logprob, s.n_tokens, utf8_chars(text)});
          ll.push_back(s.sum_logprob);
        }
        const int pred = pick_choice(cs, McScoring::kSum);
        const int pred_norm = pick_choice(cs, McScoring::kPerChar);
        const int pred_tok = pick_choice(cs, McScoring::kPerToken);
        acc.push_back(pred == it.gold);
        acc_norm.push_back(pred_norm == it.gold);
        core.push_back(pred_tok == it.gold);
        baseline += 1.0 / double(p.count);
        rec["logliks"] = ll;
        rec["gold"] = it.gold;
        rec["pred"] = pred;
        rec["pred_norm"] = pred_norm;
      }
      if (o.keep_items) res.items.push_back(std::move(rec));
    }
    res.requests = static_cast<int64_t>(requests.size());
  }

  // Generative items: greedy, o.batch of them decoded together (infer::rollout: each row
  // computed as it would be alone, so the answers equal one-at-a-time generation), each ending
  // at a stop token, at max_gen_tokens, or once its text holds the next few-shot "Question:".
  const std::string stop = "Question:";
  std::vector<std::string> gen_text(gen_prompts.size());
  infer::RolloutOptions ro;
  ro.max_new_tokens = o.max_gen_tokens;
  ro.temperature = 0.0f;
  ro.stop_tokens = o.stop_tokens;
  ro.max_batch = std::max(o.batch, 1);
  ro.stop_when = [&](const infer::Rollout& r) {
    std::string& text = gen_text[static_cast<size_t>(r.prompt_index)];
    text += tok.token_bytes(static_cast<tokenizer::TokenId>(r.tokens.back()));
    return text.find(stop) != std::string::npos;
  };
  const std::vector<infer::Rollout> gens =
      gen_prompts.empty() ? std::vector<infer::Rollout>{} : infer::rollout(model, gen_prompts, ro);
  for (size_t g = 0; g < gen_prompts.size(); ++g) {
    const TaskItem& it = task.items[gen_items[g]];
    // the generated text: stop tokens (which rollout keeps in the row) are not text
    std::string text;
    for (int32_t id : gens[g].tokens)
      if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) == o.stop_tokens.end())
        text += tok.token_bytes(static_cast<tokenizer::TokenId>(id));
    if (auto at = text.find(stop); at != std::string::npos) text.resize(at);
    auto strict = align::extract_marked_number(text);
    auto flex = align::extract_last_number(text);
    const bool ok = strict && align::numbers_equal(*strict, it.answer);
    acc.push_back(ok);
    flexible.push_back(flex && align::numbers_equal(*flex, it.answer));
    ++res.requests;
    if (o.keep_items)
      res.items.push_back({{"index", gen_items[g]},
                           {"line", it.line},
                           {"generation", text},
                           {"strict", strict.value_or("")},
                           {"flexible", flex.value_or("")},
                           {"answer", it.answer},
                           {"correct", ok}});
  }

  // No item scored (all too long, or --limit 0): no metric at all rather than a fake 0.
  if (acc.empty()) {
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
  }
  switch (spec.kind) {
    case TaskKind::kMultipleChoice:
      res.n = static_cast<int64_t>(acc.size());
      res.metrics = {metric("acc", acc), metric("acc_norm", acc_norm)};
      if (res.n > 0) res.metrics.push_back(metric("core_centered", core, baseline / double(res.n)));
      break;
    case TaskKind::kSchema:
      res.n = static_cast<int64_t>(acc.size());
      res.metrics = {metric("acc", acc)};
      if (res.n > 0) res.metrics.push_back(metric("core_centered", core, baseline / double(res.n)));
      break;
    case TaskKind::kLanguageModel:
      res.n = static_cast<int64_t>(acc.size());
      res.metrics = {metric("acc", acc)};
      break;
    case TaskKind::kGenerative:
      res.n = static_cast<int64_t>(acc.size());
      res.metrics = {metric("exact_match", acc), metric("exact_match_flexible", flexible)};
      break;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace aji::eval
