// `aji serve`: the model behind an OpenAI-compatible HTTP API and a chat page
// (src/aji/serve/, docs/serve.md). Loads like `aji generate` (cli/model_loader.h).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/serve/engine.h"
#include "aji/serve/server.h"

namespace {

struct ServeArgs {
  aji::cli::ModelArgs m;
  aji::serve::ServerOptions server;
  aji::serve::EngineOptions engine;
  std::string name;
};

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The engine's OpenMP threads spin briefly (GOMP_SPINCOUNT=1000, a few microseconds) before
// they sleep, unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set). libgomp
// reads the policy once, when it is loaded, so the command executes itself again (same pid,
// same arguments) with it set. Why: a server shares its cores with its HTTP threads and, on
// one machine, its clients. libgomp's default spins up to 300,000 iterations at every barrier
// and between parallel regions, and spinning threads lose the scheduler's favour to
// everything else: on a loaded 2-core machine (load average 26) a 1-client stream of the
// `tiny` model got a token every 130-300 ms with the default, 3-4 ms passive, 3.9 ms with
// 1000 spins, 45 ms with 10,000. Passive has its own cost: every one of a decode step's ~25
// parallel regions wakes a sleeping thread (measured: 1 CPU busy of 2, ~60 context switches
// per token, 200 tokens in 0.61-0.75 s against 0.47-0.56 s with 1000 spins). On a quiet
// machine 1000 spins served 1 client 30% faster than passive (343-357 against 266-273
// tokens/s, tiny, 2 threads) and 4 clients 10% faster; under 4 busy loops on the 2 cores, as
// fast as passive.
void use_short_openmp_spin() {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t i = 0; i < all.size();) {
    const size_t end = all.find('\0', i);
    args.push_back(all.substr(i, end == std::string::npos ? std::string::npos : end - i));
    if (end == std::string::npos) break;
    i = end + 1;
  }
  if (args.empty()) return;
  std::vector<char*> argv;
  for (auto& x : args) argv.push_back(x.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  ::setenv("GOMP_SPINCOUNT", "1000", 1);
  ::execv("/proc/self/exe", argv.data());
  ::unsetenv("GOMP_SPINCOUNT");  // exec failed: serve with the default policy
}

void run_serve(ServeArgs& a) {
  if (a.engine.max_batch < 1) throw aji::Error("--max-batch must be >= 1").fix("give --max-batch 1 or more");
  if (a.engine.max_queue < 0) throw aji::Error("--max-queue must be >= 0").fix("give --max-queue 0 or more");
  if (a.engine.context < 0) throw aji::Error("--ctx must be >= 0").fix("0 = the model's context length");
  if (!(a.server.request_timeout_s > 0)) throw aji::Error("--timeout must be > 0 seconds").fix("e.g. --timeout 600");
  if (a.server.max_body < 1024) throw aji::Error("--max-body must be at least 1024 bytes").fix("e.g. --max-body 8388608");
  if (a.server.port < 0 || a.server.port > 65535) throw aji::Error("--port must be 0..65535").fix("e.g. --port 8080");
  use_short_openmp_spin();
  const bool quiet = aji::cli::global_options().quiet;
  aji::cli::LoadedModel l = aji::cli::load_model_for_inference(a.m);
  a.server.model_name = a.name.empty() ? std::filesystem::path(a.m.model).filename().string() : a.name;
  if (a.server.model_name.empty()) a.server.model_name = "aji";
  if (a.server.http_threads <= 0) a.server.http_threads = a.engine.max_batch + a.engine.max_queue + 8;

  aji::serve::Engine engine(l.model, a.engine);
  aji::serve::Server server(engine, l.tok, {l.bos, l.stop_tokens}, a.server);
  const int port = server.bind();
  const std::string& host = a.server.host;
  if (!is_loopback(host) && a.server.api_key.empty())
    std::fprintf(stderr,
                 "warning: listening on %s without --api-key: anyone who can reach this address can use the model\n",
                 host.c_str());
  const std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  const std::string url = "http://" + shown + ":" + std::to_string(port);
  std::printf("aji serve: model '%s' (context %d tokens) at %s/\n  chat page: %s/\n  OpenAI API: %s/v1 "
              "(e.g. curl %s/v1/chat/completions -H 'Content-Type: application/json' "
              "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}')\n",
              a.server.model_name.c_str(), engine.context(), url.c_str(), url.c_str(), url.c_str(), url.c_str());
  if (!quiet) std::printf("  Ctrl-C stops the server after the requests in flight (twice: at once)\n");
  std::fflush(stdout);

  aji::InterruptGuard guard;
  std::thread http([&] { server.run(); });
  while (!aji::interrupt_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (!quiet) std::fprintf(stderr, "aji serve: stopping (finishing the requests in flight)\n");
  server.begin_shutdown();
  http.join();
  engine.shutdown(/*finish_inflight=*/true);
  if (!quiet) std::fprintf(stderr, "aji serve: stopped\n");
}

aji::cli::CommandRegistrar reg(65, [](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API with a chat page");
  cmd->footer(
      "Example: aji serve --model runs/sft --port 8080   then open http://127.0.0.1:8080/\n"
      "Routes: POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics, /tokenizer_info;\n"
      "POST /tokenize, /detokenize. Binds 127.0.0.1 unless --host says otherwise. docs/serve.md has the details.");
  aji::cli::add_model_options(cmd, a->m);
  aji::cli::add_weights_option(cmd, a->m.weights);
  aji::cli::add_kv_cache_option(cmd, a->m.kv_cache);
  aji::cli::add_device_option(cmd, a->m.device);
  a->m.keep_fp32 = true;  // prompt echo / logprobs run the full-sequence forward on the fp32 matrices
  cmd->add_option("--host", a->server.host, "Address to listen on (0.0.0.0 = every interface; give --api-key then)")
      ->capture_default_str();
  cmd->add_option("--port", a->server.port, "Port (0 = any free port)")->capture_default_str();
  cmd->add_option("--api-key", a->server.api_key,
                  "Require 'Authorization: Bearer KEY' on the generation routes and /metrics")
      ->envname("AJI_API_KEY");
  cmd->add_option("--name", a->name, "Model id shown by /v1/models (default: the model directory's name)");
  cmd->add_option("--max-batch", a->engine.max_batch, "Requests decoded together at most")->capture_default_str();
  cmd->add_option("--max-queue", a->engine.max_queue, "Requests waiting at most; more get 429")
      ->capture_default_str();
  cmd->add_option("--ctx", a->engine.context, "Context length in tokens (0 = the model's)")->capture_default_str();
  cmd->add_option("--timeout", a->server.request_timeout_s, "Seconds a request may run before it is cancelled")
      ->capture_default_str();
  cmd->add_option("--max-body", a->server.max_body, "Largest request body in bytes; larger get 413")
      ->capture_default_str();
  cmd->add_option("--max-n", a->server.max_n, "Most choices (n) per request")->capture_default_str();
  cmd->add_option("--http-threads", a->server.http_threads,
                  "Connections served at once (default: max-batch + max-queue + 8)");
  a->server.http_threads = 0;
  cmd->add_flag("!--no-batch-invariant", a->engine.batch_invariant,
                "Decode the batch with one GEMM (faster with many clients; a seeded request's tokens may then "
                "depend on the requests beside it)");
  cmd->callback([a] { run_serve(*a); });
});

}  // namespace
