// The OpenAI-compatible API as pure functions (no sockets, no model): request bodies parsed
// and validated into structs, and the response / server-sent-event JSON built in OpenAI's
// exact shapes. server.cpp glues these to the HTTP library and the engine; the fuzzer and
// the unit tests drive them directly.
//
// Shapes follow openai-python's types (chat_completion.py, chat_completion_chunk.py,
// completion.py, completion_choice.py); /tokenize, /detokenize and /tokenizer_info follow
// vLLM's, which lm-evaluation-harness probes (docs/serve.md).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/conversation.h"

namespace aji::serve {

// A client-visible error: HTTP status and OpenAI's error object.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string param;    // "" = null
  std::string message;
  std::string code;     // "" = null
};

// Thrown by the parsers (and by the server for its own checks).
class ApiException : public std::runtime_error {
 public:
  explicit ApiException(ApiError e) : std::runtime_error(e.message), error_(std::move(e)) {}
  const ApiError& error() const { return error_; }

 private:
  ApiError error_;
};

// 400 invalid_request_error naming the field.
[[noreturn]] void bad_request(std::string param, std::string message, std::string code = "");

// {"error":{"message","type","param","code"}}
nlohmann::json error_json(const ApiError& e);

// Limits the parsers enforce (the server passes its own).
struct ApiLimits {
  int max_n = 16;
  int max_stop = 16;          // stop strings per request
  int max_top_logprobs = 20;  // OpenAI's cap on chat top_logprobs (completions logprobs <= 20 as well)
};

// Fields shared by both routes.
struct SamplingFields {
  std::string model;              // echoed back; any string accepted
  float temperature = 1.0f;       // 0 = greedy
  float top_p = 1.0f;
  int top_k = 0;                  // extension (vLLM): 0 = off
  float min_p = 0.0f;             // extension (vLLM)
  float repetition_penalty = 1.0f;  // extension (vLLM)
  std::optional<int> max_tokens;  // max_tokens or max_completion_tokens; nullopt = route default
  std::vector<std::string> stop;  // never contains an empty string
  std::optional<int64_t> seed;
  int n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
};

struct ChatRequest : SamplingFields {
  std::vector<align::Message> messages;  // developer -> system; ends with a user turn
  bool logprobs = false;
  int top_logprobs = 0;
};

// One prompt of /v1/completions: text, or token ids given by the client.
struct PromptInput {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> tokens;
};

struct CompletionRequest : SamplingFields {
  std::vector<PromptInput> prompts;  // non-empty
  bool echo = false;
  std::optional<int> logprobs;       // nullopt = no logprobs object; k >= 0 alternatives
};

struct TokenizeRequest {
  std::string text;                          // "prompt" or "content" (llama.cpp's name)
  std::vector<align::Message> messages;      // vLLM's chat form (rendered as a generation prompt)
  bool is_chat = false;
  bool add_special_tokens = true;            // vLLM's default; lm-eval sends false
  bool return_token_strs = false;
};

struct DetokenizeRequest {
  std::vector<int64_t> tokens;  // range-checked by the server against the vocabulary
};

// Parse + validate. Throw ApiException (400) for malformed JSON, wrong types or values out
// of range; unknown fields are ignored unless they would change the meaning (a non-default
// logit_bias, tools, penalties, suffix, best_of > n, response_format other than text),
// which are refused as unsupported rather than silently dropped.
ChatRequest parse_chat_request(std::string_view body, const ApiLimits& limits = {});
CompletionRequest parse_completion_request(std::string_view body, const ApiLimits& limits = {});
TokenizeRequest parse_tokenize_request(std::string_view body);
DetokenizeRequest parse_detokenize_request(std::string_view body);

// ---- responses -------------------------------------------------------------------------

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& u);

// One scored token: its text (raw token bytes, may be invalid UTF-8: dump() replaces),
// log-probability (nullopt for the first prompt token) and top alternatives, most likely first.
struct TokenLogprob {
  std::string token;
  std::optional<float> logprob;
  std::vector<std::pair<std::string, float>> top;
};

// Chat choice: message text, finish reason, and logprobs.content when asked.
struct ChatChoice {
  int index = 0;
  std::string content;
  std::string finish_reason;  // "stop" | "length"
  std::optional<std::vector<TokenLogprob>> logprobs;
};

nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens);
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::vector<ChatChoice>& choices, const Usage& usage);
// A chat.completion.chunk with one choice: delta is {"role":"assistant"}, {"content":...} or {};
// finish_reason "" = null. usage is null on every chunk but the include_usage one.
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                          const nlohmann::json& delta, const std::string& finish_reason,
                          const std::optional<std::vector<TokenLogprob>>& logprobs = std::nullopt);
// The include_usage chunk: choices [] and usage filled in (same object for both routes' shape).
nlohmann::json usage_chunk(const std::string& id, const std::string& object, int64_t created,
                           const std::string& model, const Usage& usage);

// Legacy completions logprobs: {tokens, token_logprobs, top_logprobs, text_offset}, where
// text_offset[i] is the byte offset of token i in the choice's text (which starts with the
// echoed prompt when echo). The first prompt token has null token_logprob and top_logprobs.
nlohmann::json completion_logprobs_json(const std::vector<TokenLogprob>& tokens, int64_t start_offset = 0);

struct CompletionChoice {
  int index = 0;
  std::string text;
  std::string finish_reason;
  std::optional<std::vector<TokenLogprob>> logprobs;  // nullopt = "logprobs": null
};
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::vector<CompletionChoice>& choices, const Usage& usage);
// A streamed text_completion chunk (finish_reason "" = null).
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                                const std::string& text, const std::string& finish_reason);

// JSON text for the wire: invalid UTF-8 (partial tokens) replaced by U+FFFD, never throws.
std::string dump(const nlohmann::json& j);
// One server-sent event: "data: <json>\n\n".
std::string sse_event(const nlohmann::json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// "chatcmpl-" / "cmpl-" + 24 hex digits from a process-wide counter mixed with the clock.
std::string make_id(std::string_view prefix);

}  // namespace aji::serve
