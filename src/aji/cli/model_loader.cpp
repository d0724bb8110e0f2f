#include "aji/cli/model_loader.h"

#include <filesystem>

#include "aji/base/error.h"
#include "aji/train/checkpoint.h"

namespace aji::cli {

namespace fs = std::filesystem;

LoadedModel load_model_for_inference(const ModelArgs& a) {
  fs::path dir;
  model::Model model = train::load_model(a.model, &dir);
  const fs::path tok_path = train::require_tokenizer_file(dir, a.tokenizer);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  if (tok.vocab_size() > static_cast<size_t>(model.config().vocab_size))
    throw Error("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                std::to_string(model.config().vocab_size))
        .at(tok_path.string())
        .fix("use the tokenizer that was trained with this model");
  std::optional<int32_t> bos;
  std::vector<int32_t> stops;
  const auto eot = tok.special_id("<|endoftext|>");
  if (model.config().bos_token_id >= 0)
    bos = model.config().bos_token_id;
  else if (eot)
    bos = static_cast<int32_t>(*eot);
  if (model.config().eos_token_id >= 0) stops.push_back(model.config().eos_token_id);
  if (eot) stops.push_back(static_cast<int32_t>(*eot));
  if (a.no_bos) bos.reset();
  return {std::move(model), std::move(tok), bos, stops};
}

std::vector<int32_t> encode_text(const LoadedModel& l, const std::string& text) {
  std::vector<int32_t> ids;
  if (l.bos) ids.push_back(*l.bos);
  for (auto id : l.tok.encode(text, tokenizer::SpecialPolicy::kAsText)) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

void add_model_options(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--model", a.model, "Model: aji run dir, checkpoint dir (RUN/ckpt-N) or Hugging Face model dir")
      ->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer file (default: the one in the model directory)");
  cmd->add_flag("--no-bos", a.no_bos, "Do not start the text with the model's <|endoftext|> / BOS token");
}

}  // namespace aji::cli
