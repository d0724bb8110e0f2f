// The OpenAI API layer without sockets: every request field parsed and validated (each bad
// input of issue #16 answered 400 naming the field), and responses / stream chunks in the
// shapes openai-python's types declare (chat_completion.py, chat_completion_chunk.py,
// completion.py; the field lists below are copied from those files).
#include <gtest/gtest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "aji/serve/api.h"

using aji::serve::ApiException;
using nlohmann::json;
namespace sv = aji::serve;

namespace {

// The ApiError a body gets (status 0 when it parses).
template <class F>
sv::ApiError error_of(F f) {
  try {
    f();
  } catch (const ApiException& e) {
    return e.error();
  }
  return sv::ApiError{0, "", "", "", ""};
}

sv::ApiError chat_error(const std::string& body) {
  return error_of([&] { sv::parse_chat_request(body); });
}
sv::ApiError completion_error(const std::string& body) {
  return error_of([&] { sv::parse_completion_request(body); });
}

std::set<std::string> keys(const json& j) {
  std::set<std::string> k;
  for (auto it = j.begin(); it != j.end(); ++it) k.insert(it.key());
  return k;
}

const std::string kMsgs = R"("messages":[{"role":"user","content":"hi"}])";

}  // namespace

TEST(ServeApi, ChatRequestEveryField) {
  auto r = sv::parse_chat_request(
      R"({"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"},
          {"role":"assistant","content":[{"type":"text","text":"he"},{"type":"text","text":"llo"}]},
          {"role":"user","content":"again"}],
          "temperature":0.5,"top_p":0.9,"max_tokens":7,"stop":["\n","END"],"seed":-3,"n":2,"stream":true,
          "stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":3,"user":"u","foo":{"bar":1}})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, aji::align::Role::kSystem);  // developer is treated as system
  EXPECT_EQ(r.messages[2].content, "hello");                   // text parts joined
  EXPECT_FLOAT_EQ(r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(*r.seed, -3);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);

  auto d = sv::parse_chat_request("{" + kMsgs + "}");  // defaults
  EXPECT_FLOAT_EQ(d.temperature, 1.0f);
  EXPECT_FALSE(d.max_tokens.has_value());
  EXPECT_EQ(d.n, 1);
  EXPECT_FALSE(d.stream);

  auto m = sv::parse_chat_request("{" + kMsgs + R"(,"max_completion_tokens":9,"stop":"x","max_tokens":null})");
  EXPECT_EQ(*m.max_tokens, 9);
  EXPECT_EQ(m.stop, std::vector<std::string>{"x"});
}

TEST(ServeApi, ChatBadInputIs400NamingTheField) {
  struct Case {
    std::string body, param;
  };
  const std::vector<Case> cases = {
      {"{", ""},                                   // malformed JSON
      {"[1,2]", ""},                               // not an object
      {"{\"messages\":\"hi\"}", "messages"},       // wrong type
      {"{\"messages\":[]}", "messages"},           // empty messages
      {"{}", "messages"},                          // missing
      {R"({"messages":[{"role":"tool","content":"x"}]})", "messages[0].role"},  // role the template cannot render
      {R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})", "messages"},
      {"{" + kMsgs + R"(,"temperature":"hot"})", "temperature"},
      {"{" + kMsgs + R"(,"temperature":3})", "temperature"},
      {"{" + kMsgs + R"(,"top_p":0})", "top_p"},
      {"{" + kMsgs + R"(,"max_tokens":-1})", "max_tokens"},
      {"{" + kMsgs + R"(,"max_tokens":0})", "max_tokens"},
      {"{" + kMsgs + R"(,"max_tokens":2.5})", "max_tokens"},
      {"{" + kMsgs + R"(,"max_completion_tokens":"9"})", "max_completion_tokens"},
      {"{" + kMsgs + R"(,"n":0})", "n"},
      {"{" + kMsgs + R"(,"n":17})", "n"},
      {"{" + kMsgs + R"(,"stream":"yes"})", "stream"},
      {"{" + kMsgs + R"(,"stop":5})", "stop"},
      {"{" + kMsgs + R"(,"stop":["a",1]})", "stop"},
      {"{" + kMsgs + R"(,"seed":"1"})", "seed"},
      {"{" + kMsgs + R"(,"seed":1e30})", "seed"},
      {"{" + kMsgs + R"(,"stream_options":true})", "stream_options"},
      {"{" + kMsgs + R"(,"logprobs":1})", "logprobs"},
      {"{" + kMsgs + R"(,"top_logprobs":21,"logprobs":true})", "top_logprobs"},
      {"{" + kMsgs + R"(,"top_logprobs":2})", "top_logprobs"},
      {"{" + kMsgs + R"(,"frequency_penalty":0.5})", "frequency_penalty"},  // would change the output
      {"{" + kMsgs + R"(,"logit_bias":{"1":5}})", "logit_bias"},
      {"{" + kMsgs + R"(,"tools":[{"type":"function"}]})", "tools"},
      {"{" + kMsgs + R"(,"response_format":{"type":"json_object"}})", "response_format"},
  };
  for (const auto& c : cases) {
    auto e = chat_error(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_FALSE(e.message.empty()) << c.body;
  }
  // Invalid UTF-8 inside a JSON string is malformed JSON.
  EXPECT_EQ(chat_error(std::string(R"({"messages":[{"role":"user","content":")") + "\xff\xfe" + "\"}]}").status, 400);
  // Ignored as OpenAI does: unknown fields, zero penalties, an empty tools list, text format.
  EXPECT_EQ(chat_error("{" + kMsgs +
                       R"(,"user":"x","frequency_penalty":0,"presence_penalty":0,"tools":[],
                        "response_format":{"type":"text"},"logit_bias":{},"parallel_tool_calls":true})")
                .status,
            0);
}

TEST(ServeApi, CompletionPromptForms) {
  auto s = sv::parse_completion_request(R"({"prompt":"hello"})");
  ASSERT_EQ(s.prompts.size(), 1u);
  EXPECT_FALSE(s.prompts[0].is_tokens);
  EXPECT_EQ(s.prompts[0].text, "hello");
  EXPECT_EQ(*s.max_tokens, 16);  // OpenAI's default
  EXPECT_FALSE(s.logprobs.has_value());

  auto ls = sv::parse_completion_request(R"({"prompt":["a","b"],"n":2})");
  ASSERT_EQ(ls.prompts.size(), 2u);
  EXPECT_EQ(ls.prompts[1].text, "b");

  auto ids = sv::parse_completion_request(R"({"prompt":[1,2,3],"max_tokens":0,"echo":true,"logprobs":0})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_TRUE(ids.prompts[0].is_tokens);
  EXPECT_EQ(ids.prompts[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*ids.max_tokens, 0);
  EXPECT_EQ(*ids.logprobs, 0);
  EXPECT_TRUE(ids.echo);

  // lm-eval's exact loglikelihood request (spec §1.5).
  auto lm = sv::parse_completion_request(
      R"({"model":"aji","prompt":[[10,20,30],[40]],"temperature":0,"max_tokens":1,"logprobs":1,"seed":1234,"echo":true})");
  ASSERT_EQ(lm.prompts.size(), 2u);
  EXPECT_EQ(lm.prompts[0].tokens, (std::vector<int32_t>{10, 20, 30}));
  EXPECT_EQ(lm.prompts[1].tokens, (std::vector<int32_t>{40}));
  EXPECT_EQ(*lm.logprobs, 1);
  EXPECT_EQ(*lm.seed, 1234);
  EXPECT_FLOAT_EQ(lm.temperature, 0.0f);
}

TEST(ServeApi, CompletionBadInput) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{}", "prompt"},
      {R"({"prompt":5})", "prompt"},
      {R"({"prompt":[]})", "prompt"},
      {R"({"prompt":[[]]})", "prompt"},
      {R"({"prompt":[1,-2]})", "prompt"},
      {R"({"prompt":[1,"a"]})", "prompt"},
      {R"({"prompt":[[1],2]})", "prompt"},
      {R"({"prompt":["a",1]})", "prompt"},
      {R"({"prompt":[1,4294967296]})", "prompt"},
      {R"({"prompt":[{"a":1}]})", "prompt"},
      {R"({"prompt":"x","max_tokens":-1})", "max_tokens"},
      {R"({"prompt":"x","logprobs":21})", "logprobs"},
      {R"({"prompt":"x","logprobs":"1"})", "logprobs"},
      {R"({"prompt":"x","echo":1})", "echo"},
      {R"({"prompt":"x","suffix":"s"})", "suffix"},
      {R"({"prompt":"x","best_of":3})", "best_of"},
      {R"({"prompt":"x","presence_penalty":1})", "presence_penalty"},
  };
  for (const auto& [body, param] : cases) {
    auto e = completion_error(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body;
  }
}

TEST(ServeApi, TokenizeAndDetokenizeRequests) {
  auto a = sv::parse_tokenize_request(R"({"prompt":"test","add_special_tokens":false})");  // lm-eval's probe
  EXPECT_EQ(a.text, "test");
  EXPECT_FALSE(a.add_special_tokens);
  auto b = sv::parse_tokenize_request(R"({"content":"x"})");  // llama.cpp's field name
  EXPECT_EQ(b.text, "x");
  EXPECT_TRUE(b.add_special_tokens);  // vLLM's default
  auto c = sv::parse_tokenize_request(R"({"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_TRUE(c.is_chat);
  EXPECT_EQ(error_of([] { sv::parse_tokenize_request("{}"); }).status, 400);
  EXPECT_EQ(error_of([] { sv::parse_tokenize_request(R"({"prompt":1})"); }).status, 400);
  EXPECT_EQ(sv::parse_detokenize_request(R"({"tokens":[1,2]})").tokens, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(error_of([] { sv::parse_detokenize_request(R"({"tokens":"1"})"); }).status, 400);
  EXPECT_EQ(error_of([] { sv::parse_detokenize_request(R"({"tokens":[1.5]})"); }).status, 400);
}

TEST(ServeApi, ErrorShape) {
  sv::ApiError e{400, "invalid_request_error", "messages", "too long", "context_length_exceeded"};
  json j = sv::error_json(e);
  EXPECT_EQ(keys(j), (std::set<std::string>{"error"}));
  EXPECT_EQ(keys(j["error"]), (std::set<std::string>{"message", "type", "param", "code"}));
  EXPECT_EQ(j["error"]["code"], "context_length_exceeded");
  sv::ApiError n{401, "authentication_error", "", "bad key", ""};
  EXPECT_TRUE(sv::error_json(n)["error"]["param"].is_null());
  EXPECT_TRUE(sv::error_json(n)["error"]["code"].is_null());
}

TEST(ServeApi, ChatResponseShape) {
  sv::ChatChoice c{0, "hello", "stop", std::nullopt};
  sv::ChatChoice c2{1, "yo", "length", std::vector<sv::TokenLogprob>{{"yo", -0.5f, {{"yo", -0.5f}, {"ya", -1.5f}}}}};
  json j = sv::chat_response("chatcmpl-1", 123, "m", {c, c2}, {5, 3});
  // ChatCompletion: id, choices, created, model, object, service_tier?, system_fingerprint?, usage?
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "chatcmpl-1");
  EXPECT_EQ(j["created"], 123);
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
  ASSERT_EQ(j["choices"].size(), 2u);
  // Choice: finish_reason, index, logprobs, message
  EXPECT_EQ(keys(j["choices"][0]), (std::set<std::string>{"finish_reason", "index", "logprobs", "message"}));
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "hello");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  const json& lp = j["choices"][1]["logprobs"]["content"][0];
  // ChatCompletionTokenLogprob: token, bytes, logprob, top_logprobs[{token, bytes, logprob}]
  EXPECT_EQ(keys(lp), (std::set<std::string>{"token", "bytes", "logprob", "top_logprobs"}));
  EXPECT_EQ(lp["bytes"], (json{121, 111}));
  EXPECT_EQ(lp["top_logprobs"][1]["token"], "ya");
  EXPECT_DOUBLE_EQ(lp["logprob"].get<double>(), -0.5);
}

TEST(ServeApi, ChunksAndSse) {
  json first = sv::chat_chunk("chatcmpl-9", 7, "m", 0, {{"role", "assistant"}, {"content", ""}}, "");
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first["usage"].is_null());
  json last = sv::chat_chunk("chatcmpl-9", 7, "m", 0, json::object(), "stop");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  json u = sv::usage_chunk("chatcmpl-9", "chat.completion.chunk", 7, "m", {4, 2});
  EXPECT_TRUE(u["choices"].is_array() && u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 6);
  std::string ev = sv::sse_event(first);
  ASSERT_EQ(ev.rfind("data: ", 0), 0u);
  ASSERT_EQ(ev.substr(ev.size() - 2), "\n\n");
  EXPECT_EQ(ev.find('\n'), ev.size() - 2);  // one line of JSON
  EXPECT_EQ(json::parse(ev.substr(6)), first);
  EXPECT_EQ(std::string(sv::kSseDone), "data: [DONE]\n\n");
  json t = sv::completion_chunk("cmpl-1", 7, "m", 2, "abc", "");
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "abc");
  EXPECT_EQ(t["choices"][0]["index"], 2);
}

TEST(ServeApi, CompletionLogprobsWithEcho) {
  // Prompt "ab" (first token has no logprob) + generated "c".
  std::vector<sv::TokenLogprob> toks = {{"a", std::nullopt, {}},
                                        {"b", -1.25f, {{"x", -0.5f}, {"b", -1.25f}}},
                                        {"c", -0.75f, {{"c", -0.75f}}}};
  json lp = sv::completion_logprobs_json(toks);
  EXPECT_EQ(keys(lp), (std::set<std::string>{"tokens", "token_logprobs", "top_logprobs", "text_offset"}));
  EXPECT_EQ(lp["tokens"], (json{"a", "b", "c"}));
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_DOUBLE_EQ(lp["token_logprobs"][1].get<double>(), -1.25);
  EXPECT_EQ(lp["top_logprobs"][1], (json{{"x", -0.5}, {"b", -1.25}}));
  EXPECT_EQ(lp["text_offset"], (json{0, 1, 2}));
  // lm-eval's sum over token_logprobs[ctxlen:-1] with ctxlen 1 is the continuation "b".
  json resp = sv::completion_response("cmpl-1", 1, "m", {{0, "abc", "length", toks}}, {2, 1});
  EXPECT_EQ(resp["object"], "text_completion");
  EXPECT_EQ(keys(resp["choices"][0]), (std::set<std::string>{"finish_reason", "index", "logprobs", "text"}));
  EXPECT_EQ(resp["choices"][0]["text"], "abc");
  // A partial UTF-8 token is written with U+FFFD, never as invalid JSON.
  std::string out = sv::dump(sv::completion_logprobs_json({{"\xe2\x82", -1.0f, {{"\xe2\x82", -1.0f}}}}));
  json back;
  EXPECT_NO_THROW(back = json::parse(out));
  EXPECT_NE(out.find("\xef\xbf\xbd"), std::string::npos);
}

TEST(ServeApi, IdsAreUniqueAndPrefixed) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(sv::make_id("cmpl-"));
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_EQ(sv::make_id("chatcmpl-").rfind("chatcmpl-", 0), 0u);
}
