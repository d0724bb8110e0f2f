#include "aji/serve/api.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "aji/base/rng.h"

namespace aji::serve {

using nlohmann::json;

void bad_request(std::string param, std::string message, std::string code) {
  ApiError e;
  e.status = 400;
  e.type = "invalid_request_error";
  e.param = std::move(param);
  e.message = std::move(message);
  e.code = std::move(code);
  throw ApiException(std::move(e));
}

json error_json(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return json{{"error", std::move(err)}};
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

json parse_object(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    bad_request("", "the request body is not valid JSON (or a string in it is not valid UTF-8)");
  if (!j.is_object()) bad_request("", std::string("the request body must be a JSON object, got ") + type_name(j));
  return j;
}

// The field when present and not null.
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

double get_number(const json& v, const char* name) {
  if (!v.is_number()) bad_request(name, std::string("'") + name + "' must be a number, got " + type_name(v));
  double d = v.get<double>();
  if (!std::isfinite(d)) bad_request(name, std::string("'") + name + "' must be finite");
  return d;
}

int64_t get_int(const json& v, const char* name) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad_request(name, std::string("'") + name + "' is too large");
    return v.get<int64_t>();
  }
  // 3.0 is accepted as 3 (JSON has one number type); 3.5 is not.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  bad_request(name, std::string("'") + name + "' must be an integer, got " + type_name(v));
}

bool get_bool(const json& v, const char* name) {
  if (!v.is_boolean()) bad_request(name, std::string("'") + name + "' must be a boolean, got " + type_name(v));
  return v.get<bool>();
}

const std::string& get_string(const json& v, const char* name) {
  if (!v.is_string()) bad_request(name, std::string("'") + name + "' must be a string, got " + type_name(v));
  return v.get_ref<const std::string&>();
}

int get_int_in(const json& j, const char* name, int lo, int hi, int dflt) {
  const json* v = field(j, name);
  if (!v) return dflt;
  int64_t x = get_int(*v, name);
  if (x < lo || x > hi)
    bad_request(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " +
                          std::to_string(hi) + ", got " + std::to_string(x));
  return static_cast<int>(x);
}

// A number that must be 0 (or absent): features aji does not implement but that change the
// output when set, so they are refused instead of silently ignored.
void refuse_nonzero(const json& j, const char* name) {
  if (const json* v = field(j, name); v && get_number(*v, name) != 0.0)
    bad_request(name, std::string("'") + name + "' is not supported by aji serve (only 0)", "unsupported_parameter");
}

void parse_sampling(const json& j, SamplingFields& s, const ApiLimits& limits, bool completions) {
  if (const json* v = field(j, "model")) s.model = get_string(*v, "model");
  if (const json* v = field(j, "temperature")) {
    double t = get_number(*v, "temperature");
    if (t < 0 || t > 2) bad_request("temperature", "'temperature' must be between 0 and 2, got " + v->dump());
    s.temperature = static_cast<float>(t);
  }
  if (const json* v = field(j, "top_p")) {
    double p = get_number(*v, "top_p");
    if (p <= 0 || p > 1) bad_request("top_p", "'top_p' must be in (0, 1], got " + v->dump());
    s.top_p = static_cast<float>(p);
  }
  if (const json* v = field(j, "top_k")) {
    int64_t k = get_int(*v, "top_k");
    if (k < -1) bad_request("top_k", "'top_k' must be >= 0 (or -1 = off), got " + std::to_string(k));
    s.top_k = k < 0 ? 0 : static_cast<int>(std::min<int64_t>(k, std::numeric_limits<int>::max()));
  }
  if (const json* v = field(j, "min_p")) {
    double p = get_number(*v, "min_p");
    if (p < 0 || p > 1) bad_request("min_p", "'min_p' must be in [0, 1], got " + v->dump());
    s.min_p = static_cast<float>(p);
  }
  if (const json* v = field(j, "repetition_penalty")) {
    double p = get_number(*v, "repetition_penalty");
    if (p <= 0 || p > 100) bad_request("repetition_penalty", "'repetition_penalty' must be in (0, 100]");
    s.repetition_penalty = static_cast<float>(p);
  }
  const int kMaxTokens = std::numeric_limits<int>::max();
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = field(j, name)) {
      int64_t m = get_int(*v, name);
      if (m < 0) bad_request(name, std::string("'") + name + "' must be >= 0, got " + std::to_string(m));
      if (!completions && m == 0) bad_request(name, std::string("'") + name + "' must be >= 1 for chat");
      s.max_tokens = static_cast<int>(std::min<int64_t>(m, kMaxTokens));
    }
  }
  if (const json* v = field(j, "stop")) {
    auto add = [&](const json& x) {
      const std::string& t = get_string(x, "stop");
      if (!t.empty()) s.stop.push_back(t);
    };
    if (v->is_string()) {
      add(*v);
    } else if (v->is_array()) {
      if (static_cast<int>(v->size()) > limits.max_stop)
        bad_request("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
      for (const auto& x : *v) add(x);
    } else {
      bad_request("stop", std::string("'stop' must be a string or an array of strings, got ") + type_name(*v));
    }
  }
  if (const json* v = field(j, "seed")) s.seed = get_int(*v, "seed");
  s.n = get_int_in(j, "n", 1, limits.max_n, 1);
  if (const json* v = field(j, "stream")) s.stream = get_bool(*v, "stream");
  if (const json* v = field(j, "stream_options")) {
    if (!v->is_object()) bad_request("stream_options", "'stream_options' must be an object");
    if (const json* u = field(*v, "include_usage")) s.include_usage = get_bool(*u, "stream_options.include_usage");
  }
  refuse_nonzero(j, "frequency_penalty");
  refuse_nonzero(j, "presence_penalty");
  if (const json* v = field(j, "logit_bias")) {
    if (!v->is_object()) bad_request("logit_bias", "'logit_bias' must be an object");
    if (!v->empty()) bad_request("logit_bias", "'logit_bias' is not supported by aji serve", "unsupported_parameter");
  }
}

// A message's content: a string, or an array of {"type":"text","text":...} parts (joined).
std::string message_content(const json& c, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad_request(param, "'" + param + "' must be a string or an array of text parts");
  std::string out;
  for (const auto& part : c) {
    if (!part.is_object()) bad_request(param, "each part of '" + param + "' must be an object");
    const json* type = field(part, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      bad_request(param, "only text parts ({\"type\":\"text\",\"text\":...}) are supported in '" + param + "'");
    const json* text = field(part, "text");
    if (!text || !text->is_string()) bad_request(param, "a text part of '" + param + "' needs a string 'text'");
    out += text->get<std::string>();
  }
  return out;
}

std::vector<align::Message> parse_chat_messages(const json& j) {
  const json* v = field(j, "messages");
  if (!v) bad_request("messages", "'messages' is required");
  if (!v->is_array()) bad_request("messages", std::string("'messages' must be an array, got ") + type_name(*v));
  if (v->empty()) bad_request("messages", "'messages' must not be empty");
  std::vector<align::Message> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_request(p, "'" + p + "' must be an object");
    const json* r = field(m, "role");
    if (!r || !r->is_string()) bad_request(p + ".role", "'" + p + ".role' must be a string");
    std::string role = r->get<std::string>();
    if (role == "developer") role = "system";
    auto parsed = align::parse_role(role);
    if (!parsed)
      bad_request(p + ".role",
                  "role '" + r->get<std::string>() +
                      "' cannot be rendered by the chat template (use system, developer, user or assistant)");
    auto c = m.find("content");
    out.push_back({*parsed, message_content(c == m.end() ? json(nullptr) : *c, i)});
  }
  if (out.back().role != align::Role::kUser)
    bad_request("messages", "the last message must have role 'user' (the reply is generated after it)");
  return out;
}

PromptInput token_prompt(const json& a, const char* what) {
  PromptInput p;
  p.is_tokens = true;
  p.tokens.reserve(a.size());
  for (const auto& x : a) {
    if (!x.is_number_integer() || (x.is_number_unsigned() ? x.get<uint64_t>() > INT32_MAX : (x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)))
      bad_request("prompt", std::string(what) + " must hold token ids (integers >= 0)");
    p.tokens.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return p;
}

}  // namespace

ChatRequest parse_chat_request(std::string_view body, const ApiLimits& limits) {
  json j = parse_object(body);
  ChatRequest r;
  parse_sampling(j, r, limits, /*completions=*/false);
  r.messages = parse_chat_messages(j);
  if (const json* v = field(j, "logprobs")) r.logprobs = get_bool(*v, "logprobs");
  r.top_logprobs = get_int_in(j, "top_logprobs", 0, limits.max_top_logprobs, 0);
  if (r.top_logprobs > 0 && !r.logprobs)
    bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  if (const json* v = field(j, "tools"); v && !(v->is_array() && v->empty()))
    bad_request("tools", "tools / function calling is not supported by aji serve", "unsupported_parameter");
  if (const json* v = field(j, "response_format")) {
    const json* t = v->is_object() ? field(*v, "type") : nullptr;
    if (!t || !t->is_string() || t->get<std::string>() != "text")
      bad_request("response_format", "only response_format {\"type\":\"text\"} is supported",
                  "unsupported_parameter");
  }
  return r;
}

CompletionRequest parse_completion_request(std::string_view body, const ApiLimits& limits) {
  json j = parse_object(body);
  CompletionRequest r;
  parse_sampling(j, r, limits, /*completions=*/true);
  const json* p = field(j, "prompt");
  if (!p) bad_request("prompt", "'prompt' is required");
  if (p->is_string()) {
    r.prompts.push_back({false, p->get<std::string>(), {}});
  } else if (p->is_array()) {
    if (p->empty()) bad_request("prompt", "'prompt' must not be empty");
    const json& first = (*p)[0];
    if (first.is_number()) {
      r.prompts.push_back(token_prompt(*p, "'prompt'"));
    } else if (first.is_string()) {
      for (const auto& x : *p) r.prompts.push_back({false, get_string(x, "prompt"), {}});
    } else if (first.is_array()) {
      for (const auto& x : *p) {
        if (!x.is_array()) bad_request("prompt", "'prompt' mixes token-id lists with other values");
        if (x.empty()) bad_request("prompt", "a token-id prompt must not be empty");
        r.prompts.push_back(token_prompt(x, "each list in 'prompt'"));
      }
    } else {
      bad_request("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an "
                            "array of token-id arrays");
    }
  } else {
    bad_request("prompt", std::string("'prompt' must be a string or an array, got ") + type_name(*p));
  }
  if (static_cast<int64_t>(r.prompts.size()) * r.n > 1024)
    bad_request("prompt", "at most 1024 choices (prompts x n) per request");
  if (const json* v = field(j, "echo")) r.echo = get_bool(*v, "echo");
  if (const json* v = field(j, "logprobs")) {
    if (v->is_boolean()) {  // some clients send true/false here
      if (v->get<bool>()) r.logprobs = 0;
    } else {
      r.logprobs = get_int_in(j, "logprobs", 0, limits.max_top_logprobs, 0);
    }
  }
  if (const json* v = field(j, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    bad_request("suffix", "'suffix' is not supported by aji serve", "unsupported_parameter");
  if (const json* v = field(j, "best_of")) {
    int64_t b = get_int(*v, "best_of");
    if (b != 1 && b != r.n) bad_request("best_of", "'best_of' other than n is not supported", "unsupported_parameter");
  }
  if (!r.max_tokens) r.max_tokens = 16;  // OpenAI's default for completions
  return r;
}

TokenizeRequest parse_tokenize_request(std::string_view body) {
  json j = parse_object(body);
  TokenizeRequest r;
  const json* p = field(j, "prompt");
  if (!p) p = field(j, "content");
  if (p) {
    r.text = get_string(*p, "prompt");
  } else if (field(j, "messages")) {
    r.is_chat = true;
    r.messages = parse_chat_messages(j);
  } else {
    bad_request("prompt", "'prompt' (or 'content', or 'messages') is required");
  }
  if (const json* v = field(j, "add_special_tokens")) r.add_special_tokens = get_bool(*v, "add_special_tokens");
  else if (const json* v2 = field(j, "add_special")) r.add_special_tokens = get_bool(*v2, "add_special");
  if (const json* v = field(j, "return_token_strs")) r.return_token_strs = get_bool(*v, "return_token_strs");
  return r;
}

DetokenizeRequest parse_detokenize_request(std::string_view body) {
  json j = parse_object(body);
  const json* t = field(j, "tokens");
  if (!t) bad_request("tokens", "'tokens' is required");
  if (!t->is_array()) bad_request("tokens", "'tokens' must be an array of token ids");
  DetokenizeRequest r;
  for (const auto& x : *t) r.tokens.push_back(get_int(x, "tokens"));
  return r;
}

// ---- responses -------------------------------------------------------------------------

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {
json byte_list(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}
json num_or_null(const std::optional<float>& f) {
  if (!f || !std::isfinite(*f)) return nullptr;
  return *f;
}
}  // namespace

json chat_logprobs_json(const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const auto& t : tokens) {
    json top = json::array();
    for (const auto& [s, lp] : t.top) top.push_back({{"token", s}, {"logprob", lp}, {"bytes", byte_list(s)}});
    content.push_back(
        {{"token", t.token}, {"logprob", num_or_null(t.logprob)}, {"bytes", byte_list(t.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model,
                   const std::vector<ChatChoice>& choices, const Usage& usage) {
  json cs = json::array();
  for (const auto& c : choices)
    cs.push_back({{"index", c.index},
                  {"message", {{"role", "assistant"}, {"content", c.content}, {"refusal", nullptr}}},
                  {"logprobs", c.logprobs ? chat_logprobs_json(*c.logprobs) : json(nullptr)},
                  {"finish_reason", c.finish_reason}});
  return {{"id", id},         {"object", "chat.completion"}, {"created", created},
          {"model", model},   {"choices", cs},               {"usage", usage_json(usage)},
          {"system_fingerprint", nullptr}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index, const json& delta,
                const std::string& finish_reason, const std::optional<std::vector<TokenLogprob>>& logprobs) {
  json choice = {{"index", index},
                 {"delta", delta},
                 {"logprobs", logprobs ? chat_logprobs_json(*logprobs) : json(nullptr)},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  return {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
          {"model", model}, {"choices", json::array({choice})},  {"usage", nullptr},
          {"system_fingerprint", nullptr}};
}

json usage_chunk(const std::string& id, const std::string& object, int64_t created, const std::string& model,
                 const Usage& usage) {
  return {{"id", id},       {"object", object},          {"created", created},
          {"model", model}, {"choices", json::array()}, {"usage", usage_json(usage)}};
}

json completion_logprobs_json(const std::vector<TokenLogprob>& tokens, int64_t start_offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  int64_t off = start_offset;
  for (const auto& t : tokens) {
    toks.push_back(t.token);
    lps.push_back(num_or_null(t.logprob));
    if (!t.logprob) {
      tops.push_back(nullptr);
    } else {
      json top = json::object();
      // Keys are token texts: when two alternatives print the same (partial UTF-8 bytes
      // both shown as U+FFFD, say) the more likely one is kept, as a dict can hold one.
      for (const auto& [s, lp] : t.top) {
        std::string key = dump(json(s));  // the key as it will be written
        key = json::parse(key).get<std::string>();
        if (!top.contains(key)) top[key] = lp;
      }
      tops.push_back(std::move(top));
    }
    offs.push_back(off);
    off += static_cast<int64_t>(t.token.size());
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

json completion_response(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<CompletionChoice>& choices, const Usage& usage) {
  json cs = json::array();
  for (const auto& c : choices)
    cs.push_back({{"index", c.index},
                  {"text", c.text},
                  {"logprobs", c.logprobs ? completion_logprobs_json(*c.logprobs) : json(nullptr)},
                  {"finish_reason", c.finish_reason}});
  return {{"id", id},       {"object", "text_completion"}, {"created", created},
          {"model", model}, {"choices", cs},               {"usage", usage_json(usage)},
          {"system_fingerprint", nullptr}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::string& finish_reason) {
  json choice = {{"index", index},
                 {"text", text},
                 {"logprobs", nullptr},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  return {{"id", id},       {"object", "text_completion"},     {"created", created},
          {"model", model}, {"choices", json::array({choice})}, {"usage", nullptr}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + dump(j) + "\n\n"; }

std::string make_id(std::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                  (counter.fetch_add(1) * 0x9E3779B97F4A7C15ULL);
  uint64_t a = splitmix64(seed), b = splitmix64(seed);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx%08llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b & 0xffffffffULL));
  return std::string(prefix) + buf;
}

}  // namespace aji::serve
