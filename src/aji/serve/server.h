// `aji serve`'s HTTP layer: OpenAI-compatible routes over cpp-httplib (Debian's
// libcpp-httplib-dev), feeding the engine (engine.h) and answering in the shapes api.h
// builds. Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models (the
// same three without the /v1 prefix, as llama-server), GET /health, GET /metrics,
// POST /tokenize, POST /detokenize, GET /tokenizer_info (vLLM's, which lm-eval probes),
// GET / (the chat page). docs/serve.md has the limits and what each error means.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aji/serve/engine.h"
#include "aji/serve/metrics.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0 = any free port (bind() returns it)
  std::string api_key;               // "" = no key required
  std::string model_name = "aji";    // the id /v1/models lists
  size_t max_body = 8u << 20;        // bytes; larger bodies get 413
  int max_n = 16;                    // choices per request
  double request_timeout_s = 600;    // a request still running after this is cancelled
  int io_timeout_s = 30;             // socket read/write timeouts (slow clients)
  int http_threads = 64;             // connections served at once (bounded thread pool)
};

// How text maps to tokens for this model (the same rules as `aji generate` / `aji score`).
struct TextRules {
  std::optional<int32_t> bos;         // prepended to string prompts of /v1/completions
  std::vector<int32_t> stop_tokens;   // end of text: generation stops, finish_reason "stop"
};

class Server {
 public:
  // The engine and tokenizer must outlive the server.
  Server(Engine& engine, const tokenizer::Tokenizer& tok, TextRules rules, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port. Throws aji::Error when it cannot.
  int bind();
  // Serves until begin_shutdown(); returns after the in-flight requests have been answered.
  void run();
  // Thread-safe (not async-signal-safe): new requests get 503, the listening socket closes.
  void begin_shutdown();

  const Metrics& metrics() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aji::serve
