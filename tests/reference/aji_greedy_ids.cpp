// aji's side of tests/reference/gguf_vs_llamacpp.py: the token ids `aji generate
// --temperature 0` (base model) and `aji chat --temperature 0` (chat model) produce, which
// the CLI prints only as text. Uses the same library calls as those commands: load_model,
// the model dir's tokenizer, BOS (<|endoftext|> or the config's bos) + encode(text, as text)
// for a base prompt, render_chat(..., add_generation_prompt) for a chat prompt, greedy
// infer::generate stopping at the config's eos / <|endoftext|> (base) or <|im_end|> (chat).
// Prints one JSON line: {"prompt_ids": [...], "ids": [...], "logits": [...]}  (logits: the
// full row after the prompt, from a separate forward pass).
// Usage: aji_greedy_ids MODEL_DIR base|chat N_PREDICT < prompt.txt
// Built by the script against the worktree's build/libaji_lib.a.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/infer/generate.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

int main(int argc, char** argv) try {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR base|chat N_PREDICT < prompt\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[2];
  const int n_predict = std::atoi(argv[3]);
  const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::filesystem::path dir;
  aji::model::Model model = aji::train::load_model(argv[1], &dir);
  const auto tok = aji::tokenizer::Tokenizer::load(aji::train::require_tokenizer_file(dir));
  const auto eot = tok.special_id("<|endoftext|>");
  std::vector<int32_t> prompt, stops;
  if (mode == "chat") {
    for (auto id : aji::tokenizer::render_chat(tok, {{"user", text}}, true).ids) prompt.push_back((int32_t)id);
    stops.push_back((int32_t)*tok.special_id(aji::tokenizer::kImEnd));
  } else {  // as generate_cmd.cpp's load()/encode()
    if (model.config().bos_token_id >= 0)
      prompt.push_back(model.config().bos_token_id);
    else if (eot)
      prompt.push_back((int32_t)*eot);
    for (auto id : tok.encode(text, aji::tokenizer::SpecialPolicy::kAsText)) prompt.push_back((int32_t)id);
    if (model.config().eos_token_id >= 0) stops.push_back(model.config().eos_token_id);
    if (eot) stops.push_back((int32_t)*eot);
  }
  aji::infer::GenerateOptions g;
  g.max_tokens = n_predict;
  g.sampling.temperature = 0.0f;
  g.stop_tokens = stops;
  const std::vector<int32_t> out = aji::infer::generate(model, prompt, g);
  std::vector<float> logits(model.config().vocab_size);
  {
    aji::model::KVCache cache = model.make_cache(1);
    model.forward_infer(prompt.data(), 1, (int)prompt.size(), cache, logits.data());
  }
  std::printf("{\"prompt_ids\":[");
  for (size_t i = 0; i < prompt.size(); ++i) std::printf("%s%d", i ? "," : "", prompt[i]);
  std::printf("],\"ids\":[");
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
  std::printf("],\"logits\":[");
  for (size_t i = 0; i < logits.size(); ++i) std::printf("%s%.6g", i ? "," : "", logits[i]);
  std::printf("]}\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
