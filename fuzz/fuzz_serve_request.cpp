// `aji serve` request bodies (serve/api.h): the first byte picks the route's parser (chat,
// completions, tokenize, detokenize), the rest is the HTTP body. Contract: the parser returns
// a request that keeps its invariants, or throws ApiException with a 4xx status, a type and
// a message; anything else (another exception, a sanitizer finding) is a crash. Parsed
// requests are also pushed through the response builders, whose JSON must always dump.
#include <cstdlib>

#include "aji/serve/api.h"
#include "fuzz_util.h"

namespace {

void check_fields(const aji::serve::SamplingFields& f) {
  if (f.n < 1 || f.n > 16) std::abort();
  if (!(f.temperature >= 0 && f.temperature <= 2)) std::abort();
  if (!(f.top_p > 0 && f.top_p <= 1)) std::abort();
  if (f.max_tokens && *f.max_tokens < 0) std::abort();
  for (const auto& s : f.stop)
    if (s.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::serve;
  if (size == 0) return 0;
  const int route = data[0] % 4;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (route == 0) {
      ChatRequest r = parse_chat_request(body);
      check_fields(r);
      if (r.messages.empty() || r.messages.back().role != aji::align::Role::kUser) std::abort();
      if (r.top_logprobs < 0 || r.top_logprobs > 20 || (r.top_logprobs > 0 && !r.logprobs)) std::abort();
      ChatChoice c{0, r.messages.back().content, "stop",
                   std::vector<TokenLogprob>{{r.messages.back().content, -1.0f, {{r.model, -2.0f}}}}};
      (void)dump(chat_response(make_id("chatcmpl-"), 0, r.model, {c}, {1, 2}));
      (void)sse_event(chat_chunk("x", 0, r.model, 0, {{"content", r.messages[0].content}}, ""));
    } else if (route == 1) {
      CompletionRequest r = parse_completion_request(body);
      check_fields(r);
      if (r.prompts.empty() || !r.max_tokens) std::abort();
      if (r.logprobs && (*r.logprobs < 0 || *r.logprobs > 20)) std::abort();
      std::vector<TokenLogprob> toks;
      for (const auto& p : r.prompts) {
        if (p.is_tokens && p.tokens.empty()) std::abort();
        for (int32_t t : p.tokens)
          if (t < 0) std::abort();
        // Arbitrary bytes as token texts (split the prompt text at every 3rd byte).
        for (size_t i = 0; i < p.text.size(); i += 3)
          toks.push_back({p.text.substr(i, 3), toks.empty() ? std::nullopt : std::optional<float>(-0.5f),
                          {{p.text.substr(i, 2), -0.25f}}});
      }
      (void)dump(completion_response("cmpl-x", 0, r.model, {{0, r.prompts[0].text, "length", toks}}, {3, 4}));
    } else if (route == 2) {
      TokenizeRequest r = parse_tokenize_request(body);
      if (r.is_chat && r.messages.empty()) std::abort();
    } else {
      (void)parse_detokenize_request(body);
    }
  } catch (const ApiException& e) {
    const ApiError& err = e.error();
    if (err.status < 400 || err.status >= 500 || err.type.empty() || err.message.empty()) std::abort();
    (void)dump(error_json(err));
  }
  return 0;
}
