#include "aji/align/render.h"

#include "aji/base/error.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"

namespace aji::align {

namespace {
std::vector<tokenizer::ChatMessage> to_chat(const std::vector<Message>& messages) {
  std::vector<tokenizer::ChatMessage> out;
  out.reserve(messages.size());
  for (const auto& m : messages) out.push_back({role_name(m.role), m.content});
  return out;
}
}  // namespace

void require_chat_tokens(const tokenizer::Tokenizer& tok) {
  for (auto name : {tokenizer::kImStart, tokenizer::kImEnd})
    if (!tok.special_id(name))
      throw Error("the tokenizer has no " + std::string(name) + " special token, which the chat template needs")
          .fix("add the chat special tokens when training the tokenizer (aji tokenizer train adds <|im_start|> and "
               "<|im_end|>), or pretrain with a tokenizer that has them");
}

RenderedSequence render_conversation(const tokenizer::Tokenizer& tok, const Conversation& conv, LossOn loss_on) {
  tokenizer::ChatTokens ct = tokenizer::render_chat(tok, to_chat(conv.messages));
  RenderedSequence out;
  out.ids.assign(ct.ids.begin(), ct.ids.end());
  out.loss_mask = std::move(ct.mask);
  if (loss_on == LossOn::kAll) std::fill(out.loss_mask.begin(), out.loss_mask.end(), 1);
  return out;
}

std::vector<RenderedSequence> render_conversations(const tokenizer::Tokenizer& tok,
                                                   const std::vector<Conversation>& convs, LossOn loss_on,
                                                   bool show_progress) {
  require_chat_tokens(tok);
  std::vector<RenderedSequence> out(convs.size());
  Progress progress("render", static_cast<int64_t>(convs.size()), "conv", show_progress && convs.size() >= 10000);
  parallel_for(static_cast<int64_t>(convs.size()), [&](int64_t i) {
    out[i] = render_conversation(tok, convs[i], loss_on);
    progress.add(1);
  });
  progress.finish();
  return out;
}

std::vector<uint32_t> render_generation_prompt(const tokenizer::Tokenizer& tok, const std::vector<Message>& history) {
  if (history.empty() || history.back().role != Role::kUser)
    throw Error("a generation prompt needs a history that ends with a user turn");
  tokenizer::ChatTokens ct = tokenizer::render_chat(tok, to_chat(history), /*add_generation_prompt=*/true);
  return {ct.ids.begin(), ct.ids.end()};
}

}  // namespace aji::align
