// A minimal llama.cpp client for tests/reference/gguf_vs_llamacpp.py (modelled on llama.cpp's
// examples/simple/simple.cpp): loads a GGUF file, tokenizes a prompt the way llama.cpp's
// tools do (add_special = the file's add_bos_token, parse_special = true), greedily decodes
// N tokens (stopping at an end-of-generation token) and prints one JSON line:
//   {"prompt_ids":[...], "ids":[...], "eog": true|false, "top_logits":[[id, logit], ...]}
// top_logits: the largest logit after the prompt (for the q8_0 / f32 comparison).
// Usage: llamacpp_driver MODEL.gguf N_PREDICT < prompt.txt      (the prompt is read from stdin)
//        llamacpp_driver MODEL.gguf --tokenize < text.txt       (ids without BOS, like llama-tokenize --ids)
// Built by the script against the llama.cpp tree in $LLAMA_CPP (include/ and build/bin/libllama.so).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "llama.h"

static void batch_set_tokens(llama_batch_ext* batch, const llama_token* tokens, int32_t n_tokens, llama_pos pos_0) {
  llama_batch_ext_clear(batch);
  for (int32_t i = 0; i < n_tokens; ++i) {
    const int32_t idx = llama_batch_ext_add_token(batch, 0, tokens[i]);
    const llama_pos pos = pos_0 + i;
    llama_batch_ext_set_pos(batch, idx, &pos);
  }
  llama_batch_ext_set_output_logits(batch, n_tokens - 1, true);
}

static void print_ids(const char* key, const std::vector<llama_token>& ids) {
  std::printf("\"%s\":[", key);
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? "," : "", ids[i]);
  std::printf("]");
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT|--tokenize < prompt\n", argv[0]);
    return 2;
  }
  const bool tokenize_only = std::strcmp(argv[2], "--tokenize") == 0;
  const int n_predict = tokenize_only ? 0 : std::atoi(argv[2]);
  std::string prompt((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());

  llama_log_set([](enum ggml_log_level, const char*, void*) {}, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.vocab_only = tokenize_only;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    std::fprintf(stderr, "error: unable to load model %s\n", argv[1]);
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const bool add_special = !tokenize_only;
  const int n = -llama_tokenize(vocab, prompt.c_str(), (int32_t)prompt.size(), nullptr, 0, add_special, true);
  std::vector<llama_token> prompt_ids(n);
  if (llama_tokenize(vocab, prompt.c_str(), (int32_t)prompt.size(), prompt_ids.data(), n, add_special, true) < 0) {
    std::fprintf(stderr, "error: tokenize failed\n");
    return 1;
  }
  std::printf("{");
  print_ids("prompt_ids", prompt_ids);
  if (tokenize_only) {
    std::printf("}\n");
    llama_model_free(model);
    return 0;
  }
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = n + n_predict;
  cp.n_batch = n;
  cp.n_threads = 1;
  cp.n_threads_batch = 1;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    std::fprintf(stderr, "error: no context\n");
    return 1;
  }
  llama_sampler* smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
  llama_batch_ext* batch = llama_batch_ext_init(ctx);
  batch_set_tokens(batch, prompt_ids.data(), n, 0);
  std::vector<llama_token> out;
  bool eog = false;
  int n_pos = 0, n_tokens = n;
  const int n_vocab = llama_vocab_n_tokens(vocab);
  std::vector<std::pair<float, int>> first_logits;
  while ((int)out.size() < n_predict) {
    if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
      std::fprintf(stderr, "error: decode failed\n");
      return 1;
    }
    n_pos += n_tokens;
    if (out.empty()) {
      const float* logits = llama_get_logits_ith(ctx, -1);
      for (int i = 0; i < n_vocab; ++i) first_logits.push_back({logits[i], i});
    }
    llama_token id = llama_sampler_sample(smpl, ctx, -1);
    out.push_back(id);
    if (llama_vocab_is_eog(vocab, id)) {
      eog = true;
      break;
    }
    batch_set_tokens(batch, &id, 1, n_pos);
    n_tokens = 1;
  }
  std::printf(",");
  print_ids("ids", out);
  std::printf(",\"eog\":%s,\"logits\":[", eog ? "true" : "false");
  for (size_t i = 0; i < first_logits.size(); ++i) std::printf("%s%.6g", i ? "," : "", first_logits[i].first);
  std::printf("]}\n");
  llama_batch_ext_free(batch);
  llama_sampler_free(smpl);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
