#include "aji/align/chat.h"

#include <algorithm>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/infer/sampler.h"
#include "aji/tokenizer/chat_template.h"

namespace aji::align {

std::vector<int32_t> build_chat_prompt(const tokenizer::Tokenizer& tok, std::vector<align::Message>& history,
                                       int max_context, int reserve, int* dropped) {
  int removed = 0;
  for (;;) {
    std::vector<uint32_t> ids = align::render_generation_prompt(tok, history);
    if (static_cast<int>(ids.size()) + reserve <= max_context) {
      if (dropped) *dropped = removed;
      return {ids.begin(), ids.end()};
    }
    size_t first = (!history.empty() && history.front().role == align::Role::kSystem) ? 1 : 0;
    if (history.size() - first <= 1)
      throw Error("the message is too long for the model's context (" + std::to_string(ids.size()) + " tokens + " +
                  std::to_string(reserve) + " for the reply > " + std::to_string(max_context) + ")")
          .fix("write a shorter message or system prompt, or lower --max-tokens");
    // drop the oldest user turn and the assistant reply that follows it
    size_t n = (history.size() - first >= 3) ? 2 : 1;
    history.erase(history.begin() + first, history.begin() + first + n);
    removed += static_cast<int>(n);
  }
}

ChatSession::ChatSession(model::Model& model, const tokenizer::Tokenizer& tok, infer::GenerateOptions options)
    : model_(model), tok_(tok), options_(std::move(options)) {
  align::require_chat_tokens(tok);
  im_end_ = static_cast<int32_t>(*tok.special_id(tokenizer::kImEnd));
  options_.stop_tokens.push_back(im_end_);
}

void ChatSession::set_system(const std::string& text) {
  if (!history_.empty() && history_.front().role == align::Role::kSystem) history_.erase(history_.begin());
  if (!text.empty()) history_.insert(history_.begin(), {align::Role::kSystem, text});
}

std::string ChatSession::system() const {
  return !history_.empty() && history_.front().role == align::Role::kSystem ? history_.front().content : "";
}

void ChatSession::reset() {
  std::vector<align::Message> keep;
  if (!history_.empty() && history_.front().role == align::Role::kSystem) keep.push_back(history_.front());
  history_ = std::move(keep);
}

std::string ChatSession::reply(const std::string& user, const PieceFn& on_piece, int* dropped, const StopFn& stop) {
  const int ctx = model_.config().max_seq_len;
  const int reserve = std::min(options_.max_tokens, ctx / 2);
  std::vector<align::Message> window = history_;
  window.push_back({align::Role::kUser, user});
  // Throws (and the history stays as it was) when even this turn alone does not fit.
  std::vector<int32_t> prompt = build_chat_prompt(tok_, window, ctx, reserve, dropped);
  history_.push_back({align::Role::kUser, user});
  infer::GenerateOptions o = options_;
  o.seed = options_.seed + turn_++;
  infer::Utf8Streamer stream;
  std::string text;
  infer::generate(
      model_, prompt, o,
      [&](int32_t id) {
        if (id == im_end_) return true;  // the end of the turn is not text
        std::string piece = stream.push(tok_.token_bytes(static_cast<tokenizer::TokenId>(id)));
        text += piece;
        if (on_piece && !piece.empty()) on_piece(piece);
        return !(stop && stop());
      },
      &last_stop_);
  std::string tail = stream.flush();
  text += tail;
  if (on_piece && !tail.empty()) on_piece(tail);
  history_.push_back({align::Role::kAssistant, text.empty() ? std::string(" ") : text});
  return text;
}

std::string ChatSession::retry(const PieceFn& on_piece, int* dropped, const StopFn& stop) {
  if (history_.empty() || history_.back().role != align::Role::kAssistant)
    throw Error("there is no reply to retry yet").fix("send a message first");
  const align::Message old_reply = history_.back();
  history_.pop_back();
  const std::string user = history_.back().content;
  history_.pop_back();
  try {
    return reply(user, on_piece, dropped, stop);
  } catch (...) {
    history_.push_back({align::Role::kUser, user});  // the exchange stays as it was
    history_.push_back(old_reply);
    throw;
  }
}

bool ChatSession::undo() {
  if (history_.empty() || history_.back().role != align::Role::kAssistant) return false;
  history_.pop_back();
  history_.pop_back();
  return true;
}

void ChatSession::save(const std::filesystem::path& path) const {
  if (history_.empty() || history_.back().role != align::Role::kAssistant)
    throw Error("nothing to save yet: the conversation has no reply").fix("send a message first");
  align::Conversation conv;
  conv.messages = history_;
  align::write_conversations(path, {conv});
}

}  // namespace aji::align
