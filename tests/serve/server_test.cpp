// `aji serve` end to end in-process: a tiny random model with the byte tokenizer behind the
// engine and the HTTP server on an ephemeral port, talked to with httplib's client. The
// references are independent of the server: infer::generate (greedy) for chat and
// completions text, infer::score_tokens and the `aji score --json` CLI for echo logprobs.
#include <gtest/gtest.h>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "aji/align/render.h"
#include "aji/base/atomic_file.h"
#include "aji/infer/generate.h"
#include "aji/infer/sampler.h"
#include "aji/serve/engine.h"
#include "aji/serve/server.h"
#include "aji/train/checkpoint.h"
#include "infer/byte_model.h"
#include "test_util.h"

using nlohmann::json;
namespace sv = aji::serve;

namespace {

constexpr int32_t kEot = 256, kImEnd = 258;

// A model dir on disk (so that `aji score` can read the same weights), loaded twice: one
// copy for the engine, one for the in-process references.
class ServeFixture : public ::testing::Test {
 protected:
  void start(int context = 256, sv::EngineOptions eo = {}, sv::ServerOptions so = {},
             std::vector<int32_t> stop_tokens = {kEot}) {
    dir_ = aji::test::make_byte_model_dir(tmp_.path(), "m", context, 11);
    model_ = std::make_unique<aji::model::Model>(aji::train::load_model(dir_));
    ref_ = std::make_unique<aji::model::Model>(aji::train::load_model(dir_));
    tok_ = std::make_unique<aji::tokenizer::Tokenizer>(aji::test::byte_tok(true));
    engine_ = std::make_unique<sv::Engine>(*model_, eo);
    so.port = 0;
    server_ = std::make_unique<sv::Server>(*engine_, *tok_, sv::TextRules{kEot, stop_tokens}, so);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(60, 0);
  }
  void TearDown() override {
    if (server_) server_->begin_shutdown();
    if (thread_.joinable()) thread_.join();
    if (engine_) engine_->shutdown(false);
  }

  httplib::Result post(const std::string& path, const json& body, httplib::Headers h = {}) {
    return client_->Post(path.c_str(), h, body.dump(), "application/json");
  }

  // A streamed POST: the raw SSE text. stop_after > 0: the client hangs up after that many
  // bytes arrived.
  std::string post_stream(const std::string& path, const json& body, size_t stop_after = 0) {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    std::string got;
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      got.append(d, n);
      return stop_after == 0 || got.size() < stop_after;
    };
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    c.send(req);
    return got;
  }

  // The `data:` payloads of an SSE text.
  static std::vector<std::string> events(const std::string& sse) {
    std::vector<std::string> out;
    size_t pos = 0;
    while ((pos = sse.find("data: ", pos)) != std::string::npos) {
      size_t end = sse.find("\n\n", pos);
      out.push_back(sse.substr(pos + 6, end - pos - 6));
      pos = end;
    }
    return out;
  }

  // Greedy text from the reference model: what the server must answer at temperature 0.
  std::string greedy_text(const std::vector<int32_t>& prompt, int max_tokens, std::vector<int32_t> stops,
                          std::string* finish, int* produced = nullptr) {
    aji::infer::GenerateOptions g;
    g.max_tokens = max_tokens;
    g.sampling.temperature = 0;
    g.stop_tokens = stops;
    aji::infer::StopReason why{};
    auto ids = aji::infer::generate(*ref_, prompt, g, nullptr, &why);
    aji::infer::Utf8Streamer u;
    std::string text;
    for (int32_t id : ids) {
      bool stop = false;
      for (int32_t s : stops) stop = stop || s == id;
      if (!stop) text += u.push(tok_->token_bytes(static_cast<aji::tokenizer::TokenId>(id)));
    }
    text += u.flush();
    *finish = why == aji::infer::StopReason::kStopToken ? "stop" : "length";
    if (produced) *produced = static_cast<int>(ids.size());
    return text;
  }

  aji::test::TempDir tmp_;
  std::filesystem::path dir_;
  std::unique_ptr<aji::model::Model> model_, ref_;
  std::unique_ptr<aji::tokenizer::Tokenizer> tok_;
  std::unique_ptr<sv::Engine> engine_;
  std::unique_ptr<sv::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::unique_ptr<httplib::Client> client_;
};

const json kChat = {{"model", "aji"},
                    {"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi 안녕"}}}},
                    {"temperature", 0},
                    {"max_tokens", 12}};

std::vector<int32_t> chat_prompt(const aji::tokenizer::Tokenizer& tok) {
  std::vector<aji::align::Message> h = {{aji::align::Role::kSystem, "Be brief."}, {aji::align::Role::kUser, "Hi 안녕"}};
  auto ids = aji::align::render_generation_prompt(tok, h);
  return {ids.begin(), ids.end()};
}

}  // namespace

TEST_F(ServeFixture, ChatMatchesGreedyGenerationAndStreamsTheSameText) {
  start();
  auto res = post("/v1/chat/completions", kChat);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  std::string finish;
  const auto prompt = chat_prompt(*tok_);
  int produced = 0;
  const std::string want = greedy_text(prompt, 12, {kEot, kImEnd}, &finish, &produced);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "aji");
  EXPECT_EQ(j["choices"][0]["message"]["content"], want);
  EXPECT_EQ(j["choices"][0]["finish_reason"], finish);
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], produced);
  EXPECT_EQ(j["usage"]["total_tokens"], prompt.size() + produced);
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);

  json sb = kChat;
  sb["stream"] = true;
  sb["stream_options"] = {{"include_usage", true}};
  auto evs = events(post_stream("/v1/chat/completions", sb));
  ASSERT_GE(evs.size(), 4u);
  EXPECT_EQ(evs.back(), "[DONE]");
  json first = json::parse(evs[0]);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text, fin;
  std::string id = first["id"];
  for (size_t i = 0; i + 2 < evs.size(); ++i) {
    json c = json::parse(evs[i]);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], id);
    if (c["choices"][0]["delta"].contains("content")) text += c["choices"][0]["delta"]["content"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) fin = c["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, want);
  EXPECT_EQ(fin, finish);
  json usage = json::parse(evs[evs.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], j["usage"]);
}

TEST_F(ServeFixture, StopStringsEndTheReplyWithoutTheStopText) {
  start();
  std::string finish;
  const std::string full = greedy_text(chat_prompt(*tok_), 40, {kEot, kImEnd}, &finish);
  ASSERT_GE(full.size(), 6u) << "the random model should say something";
  // Stop at the 3rd character of the greedy text (a whole UTF-8 character): the reply is
  // what comes before its first occurrence.
  std::vector<size_t> starts;
  for (size_t i = 0; i < full.size(); ++i)
    if ((static_cast<unsigned char>(full[i]) & 0xC0) != 0x80) starts.push_back(i);
  ASSERT_GE(starts.size(), 4u);
  const std::string stop = full.substr(starts[2], starts[3] - starts[2]);
  const std::string want = full.substr(0, full.find(stop));
  json b = kChat;
  b["max_tokens"] = 40;
  b["stop"] = {stop};
  auto res = post("/v1/chat/completions", b);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], want);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServeFixture, EchoLogprobsEqualAjiScore) {
  start();
  // lm-eval's request: a token-id prompt (no BOS inserted), max_tokens 1, logprobs 1, echo.
  const std::vector<int32_t> ids = {kEot, 'T', 'h', 'e', ' ', 'c', 'a', 't', 0xEC, 0x95, 0x88};
  auto res = post("/v1/completions", {{"model", "aji"}, {"prompt", {ids}}, {"temperature", 0}, {"max_tokens", 1},
                                      {"logprobs", 1}, {"seed", 1234}, {"echo", true}},
                  {{"Authorization", "Bearer "}});
  ASSERT_EQ(res->status, 200) << res->body;
  json lp = json::parse(res->body)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), ids.size() + 1);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  auto ref = aji::infer::score_tokens(*ref_, ids, 0);
  ASSERT_EQ(ref.logprobs.size(), ids.size() - 1);
  for (size_t i = 1; i < ids.size(); ++i)
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ref.logprobs[i - 1], 1e-4) << i;
  // The generated token is the argmax at temperature 0: lm-eval's is_greedy check holds.
  const json& last_top = lp["top_logprobs"][ids.size()];
  double best = -1e30;
  for (auto it = last_top.begin(); it != last_top.end(); ++it) best = std::max(best, it.value().get<double>());
  EXPECT_EQ(lp["token_logprobs"][ids.size()].get<double>(), best);
  EXPECT_EQ(lp["tokens"][1], "T");
  EXPECT_EQ(lp["text_offset"][1], std::string("<|endoftext|>").size());

  // A text prompt follows `aji score`'s BOS rule: compare with the CLI's own numbers.
  const std::string text = "The cat sat on the mat. 고양이";
  aji::write_file_atomic(tmp_.path() / "t.txt", text);
  std::string out;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " score --model " + dir_.string() + " --input " +
                                       (tmp_.path() / "t.txt").string() + " --json",
                                   &out),
            0)
      << out;
  json score = json::parse(out);
  auto r2 = post("/v1/completions", {{"prompt", text}, {"max_tokens", 0}, {"logprobs", 0}, {"echo", true}});
  ASSERT_EQ(r2->status, 200) << r2->body;
  json c2 = json::parse(r2->body)["choices"][0];
  json lp2 = c2["logprobs"];
  ASSERT_EQ(lp2["token_logprobs"].size(), score["tokens"].size());
  ASSERT_EQ(score["logprobs"].size(), score["tokens"].size() - 1);
  for (size_t i = 1; i < lp2["token_logprobs"].size(); ++i)
    EXPECT_NEAR(lp2["token_logprobs"][i].get<double>(), score["logprobs"][i - 1].get<double>(), 1e-4) << i;
  EXPECT_EQ(c2["text"], "<|endoftext|>" + text);  // echo shows the BOS the rule put in
  EXPECT_EQ(c2["finish_reason"], "length");
  EXPECT_EQ(json::parse(r2->body)["usage"]["completion_tokens"], 0);
}

TEST_F(ServeFixture, CompletionsPromptFormsAndNChoices) {
  start();
  // Two prompts x n=2 at temperature 0: four identical-per-prompt greedy choices, in order.
  const std::vector<int32_t> p1 = {kEot, 'a', 'b'};
  auto res = post("/v1/completions", {{"prompt", {p1, {kEot, 'x'}}}, {"n", 2}, {"temperature", 0}, {"max_tokens", 5}});
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  ASSERT_EQ(j["choices"].size(), 4u);
  std::string finish;
  const std::string want1 = greedy_text(p1, 5, {kEot}, &finish);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  EXPECT_EQ(j["choices"][0]["text"], want1);
  EXPECT_EQ(j["choices"][1]["text"], want1);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);  // each prompt counted once

  // Seeded sampling with n=3: choice i is the single request with seed + i.
  json b = {{"prompt", "Once"}, {"n", 3}, {"temperature", 1.0}, {"seed", 77}, {"max_tokens", 8}};
  json many = json::parse(post("/v1/completions", b)->body);
  for (int i = 0; i < 3; ++i) {
    json one = b;
    one["n"] = 1;
    one["seed"] = 77 + i;
    json single = json::parse(post("/v1/completions", one)->body);
    EXPECT_EQ(many["choices"][i]["text"], single["choices"][0]["text"]) << i;
  }
  // The string prompt and the list-of-strings form agree.
  json s1 = json::parse(post("/v1/completions", {{"prompt", "ab"}, {"temperature", 0}, {"max_tokens", 5}})->body);
  json s2 = json::parse(post("/v1/completions", {{"prompt", {"ab"}}, {"temperature", 0}, {"max_tokens", 5}})->body);
  EXPECT_EQ(s1["choices"][0]["text"], s2["choices"][0]["text"]);
  EXPECT_EQ(s1["choices"][0]["text"], want1);  // "ab" with BOS = p1
}

TEST_F(ServeFixture, ClientMistakesAre400NeverServerErrors) {
  start(64);
  auto code = [&](const std::string& path, const std::string& body) {
    auto r = client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(r);
    json e = json::parse(r->body);
    EXPECT_TRUE(e.contains("error")) << r->body;
    return std::make_pair(r->status, e["error"].value("code", json(nullptr)));
  };
  EXPECT_EQ(code("/v1/chat/completions", "{not json").first, 400);
  EXPECT_EQ(code("/v1/chat/completions", R"({"messages":[]})").first, 400);
  EXPECT_EQ(code("/v1/completions", R"({"prompt":[1,99999]})").first, 400);  // id outside the vocabulary
  auto too_long = code("/v1/completions", json{{"prompt", std::string(100, 'a')}}.dump());
  EXPECT_EQ(too_long.first, 400);
  EXPECT_EQ(too_long.second, "context_length_exceeded");
  auto chat_long = code("/v1/chat/completions",
                        json{{"messages", {{{"role", "user"}, {"content", std::string(80, 'a')}}}}}.dump());
  EXPECT_EQ(chat_long.first, 400);
  // max_tokens beyond the context is clamped to what fits: finish_reason "length".
  auto r = post("/v1/completions", {{"prompt", {kEot, 'a'}}, {"max_tokens", 100000}, {"temperature", 0}});
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 62);
  auto nf = client_->Get("/v1/nothing");
  EXPECT_EQ(nf->status, 404);
  EXPECT_EQ(json::parse(nf->body)["error"]["type"], "not_found_error");
  // A model other than the served one is a 404 model_not_found, on both generation routes.
  auto um = code("/v1/chat/completions",
                 json{{"model", "no-such-model"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}.dump());
  EXPECT_EQ(um.first, 404);
  EXPECT_EQ(um.second, "model_not_found");
  EXPECT_EQ(code("/v1/completions", R"({"model":"gpt-4o","prompt":"hi","max_tokens":1})").first, 404);
  EXPECT_EQ(client_->Get("/health")->status, 200);  // still serving
}

TEST_F(ServeFixture, ApiKeyBodyLimitAndQueue) {
  sv::ServerOptions so;
  so.api_key = "sekret";
  so.max_body = 4096;
  sv::EngineOptions eo;
  eo.max_batch = 1;
  eo.max_queue = 1;
  start(512, eo, so, {});
  const json b = {{"prompt", "hi"}, {"max_tokens", 2}};
  EXPECT_EQ(post("/v1/completions", b)->status, 401);
  auto bad = post("/v1/completions", b, {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(bad->status, 401);
  EXPECT_EQ(json::parse(bad->body)["error"]["type"], "authentication_error");
  EXPECT_EQ(post("/v1/completions", b, {{"Authorization", "Bearer "}})->status, 401);
  const httplib::Headers auth = {{"Authorization", "Bearer sekret"}};
  EXPECT_EQ(post("/v1/completions", b, auth)->status, 200);
  // Public without a key: health, models, the tokenizer probes lm-eval sends without one.
  EXPECT_EQ(client_->Get("/health")->status, 200);
  EXPECT_EQ(client_->Get("/v1/models")->status, 200);
  EXPECT_EQ(post("/tokenize", {{"prompt", "a"}})->status, 200);
  EXPECT_EQ(client_->Get("/metrics")->status, 401);

  auto big = client_->Post("/v1/completions", auth, std::string(10000, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(json::parse(big->body)["error"]["code"], "payload_too_large");

  // One running + one queued: n=6 long requests cannot all be taken -> 429, and the ones
  // already submitted are cancelled (the engine is idle again soon after).
  auto full = post("/v1/completions", {{"prompt", "x"}, {"n", 6}, {"max_tokens", 400}}, auth);
  EXPECT_EQ(full->status, 429) << full->body;
  EXPECT_EQ(json::parse(full->body)["error"]["type"], "rate_limit_error");
  for (int i = 0; i < 200 && (engine_->stats().running + engine_->stats().queued) > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(engine_->stats().running + engine_->stats().queued, 0);
  EXPECT_EQ(post("/v1/completions", b, auth)->status, 200);
}

TEST_F(ServeFixture, NoKeyConfiguredAcceptsAnyAuthorization) {
  start();
  EXPECT_EQ(post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 1}}, {{"Authorization", "Bearer "}})->status, 200);
  EXPECT_EQ(post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 1}}, {{"Authorization", "Bearer x"}})->status,
            200);
}

TEST_F(ServeFixture, ClientDisconnectCancelsTheGeneration) {
  start(4096, {}, {}, {});  // no stop tokens: only max_tokens or a cancel ends it
  const auto before = engine_->stats();
  std::string got = post_stream("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 4000}, {"temperature", 0},
                                                     {"stream", true}},
                                200);
  EXPECT_GE(got.size(), 200u);
  bool idle = false;
  for (int i = 0; i < 300 && !idle; ++i) {
    auto s = engine_->stats();
    idle = s.running == 0 && s.queued == 0 && s.requests_finished > before.requests_finished;
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(idle) << "the engine still runs the request of a client that left";
  EXPECT_LT(engine_->stats().generated_tokens - before.generated_tokens, 4000u);
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

// A non-streamed request never writes before its answer is ready, so the server has to
// notice by itself that its client left: a raw socket sends a long request (16 choices of
// 4000 tokens, decoded one at a time), waits until the engine runs it and closes. The engine
// must drop every choice within a bounded time and /metrics must count the cancel.
TEST_F(ServeFixture, NonStreamedClientDisconnectCancelsTheGeneration) {
  sv::EngineOptions eo;
  eo.max_batch = 1;  // the 16 choices run one after another: minutes of work if not cancelled
  start(4096, eo, {}, {});  // no stop tokens: only max_tokens or a cancel ends a choice
  const auto before = engine_->stats();
  const std::string body =
      json{{"prompt", "abc"}, {"max_tokens", 4000}, {"n", 16}, {"temperature", 0}}.dump();
  const std::string http = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port_));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::send(fd, http.data(), http.size(), 0), static_cast<ssize_t>(http.size()));
  bool running = false;
  for (int i = 0; i < 2000 && !running; ++i) {
    running = engine_->stats().running == 1;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(running) << "the request never started";
  ::close(fd);
  const auto t0 = std::chrono::steady_clock::now();
  bool idle = false;
  while (!idle && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    const auto s = engine_->stats();
    idle = s.running == 0 && s.queued == 0 && s.requests_finished >= before.requests_finished + 16;
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(idle) << "the engine still runs the request of a client that left";
  EXPECT_LT(waited, 3.0) << "the server checks its client every 100 ms";
  EXPECT_LT(engine_->stats().generated_tokens - before.generated_tokens, 16u * 4000u / 2);
  std::string m;
  for (int i = 0; i < 200; ++i) {
    m = client_->Get("/metrics")->body;
    if (m.find("aji_requests_cancelled_total{reason=\"client_disconnected\"} 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_NE(m.find("aji_requests_cancelled_total{reason=\"client_disconnected\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("aji_engine_running 0"), std::string::npos) << m;
  EXPECT_EQ(server_->metrics().cancelled_count("timeout"), 0u);
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

TEST_F(ServeFixture, TokenizerRoutesAndMetrics) {
  start();
  json t = json::parse(post("/tokenize", {{"prompt", "<|endoftext|>ab"}, {"add_special_tokens", false}})->body);
  EXPECT_EQ(t["tokens"], (json{kEot, 'a', 'b'}));  // special-token text is one id
  json t2 = json::parse(post("/tokenize", {{"content", "ab"}})->body);
  EXPECT_EQ(t2["tokens"], (json{kEot, 'a', 'b'}));  // add_special_tokens defaults to true: BOS
  json d = json::parse(post("/detokenize", {{"tokens", {'a', 'b', kEot}}})->body);
  EXPECT_EQ(d["prompt"], "ab<|endoftext|>");
  EXPECT_EQ(post("/detokenize", {{"tokens", {100000}}})->status, 400);
  json info = json::parse(client_->Get("/tokenizer_info")->body);
  EXPECT_EQ(info["eos_token"], "<|endoftext|>");
  EXPECT_EQ(info["bos_token"], "<|endoftext|>");
  json models = json::parse(client_->Get("/v1/models")->body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["object"], "model");
  auto page = client_->Get("/");
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);

  ASSERT_EQ(post("/v1/chat/completions", kChat)->status, 200);
  client_->Get("/nope");
  // httplib logs a request (our counter) just after sending its response: wait for it.
  std::string m;
  for (int i = 0; i < 200; ++i) {
    m = client_->Get("/metrics")->body;
    if (m.find("status=\"404\"") != std::string::npos && m.find("chat/completions\",status=\"200\"") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_NE(m.find("aji_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("aji_requests_total{route=\"other\",status=\"404\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("aji_time_to_first_token_seconds_count 1"), std::string::npos) << m;
  EXPECT_NE(m.find("aji_inter_token_latency_seconds_bucket{le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(m.find("aji_engine_batch_occupancy"), std::string::npos);
  EXPECT_NE(m.find("aji_completion_tokens_total"), std::string::npos);
}

TEST_F(ServeFixture, ShutdownFinishesTheStreamInFlight) {
  start(4096, {}, {}, {});
  std::string got;
  std::thread t([&] {
    got = post_stream("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 2000}, {"temperature", 0}, {"stream", true}});
  });
  // Shut down once the stream is under way: its first tokens exist and httplib has had time
  // to call the stream's content provider (cpp-httplib 0.11 ends a chunked response whose
  // provider has not started yet when the server stops, sending nothing).
  for (int i = 0; i < 500 && engine_->stats().generated_tokens < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(engine_->stats().running, 1) << "the stream should still be generating when the server stops";
  server_->begin_shutdown();
  t.join();
  thread_.join();
  auto evs = events(got);
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs.back(), "[DONE]");
  EXPECT_EQ(json::parse(evs[evs.size() - 2])["choices"][0]["finish_reason"], "length");
}

TEST_F(ServeFixture, RequestTimeoutCancelsAndSays504OrStreamsAnError) {
  sv::ServerOptions so;
  so.request_timeout_s = 0.001;  // no generation of 4000 tokens finishes in 1 ms
  start(4096, {}, so, {});
  auto r = post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 4000}, {"temperature", 0}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "timeout_error");
  auto evs = events(post_stream("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 4000}, {"stream", true}}));
  ASSERT_GE(evs.size(), 2u);
  EXPECT_EQ(evs.back(), "[DONE]");
  EXPECT_EQ(json::parse(evs[evs.size() - 2])["error"]["code"], "timeout");  // the error as a data event
  for (int i = 0; i < 300 && engine_->stats().running + engine_->stats().queued > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(engine_->stats().running + engine_->stats().queued, 0);  // both were cancelled
}
