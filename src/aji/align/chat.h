// Chat with an instruct model: the history rendered with the same chat template SFT trains
// with (align::render_generation_prompt), generation stopped at <|im_end|>, and the oldest
// turns dropped (the system message kept) when history + reply would overflow the context.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "aji/align/conversation.h"
#include "aji/infer/generate.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::align {

// The prompt ids for the next assistant turn. history ends with a user turn. When the
// prompt plus reserve tokens exceed max_context, whole user+assistant turn pairs are
// dropped from the front of history (the system message stays); *dropped counts the
// messages removed. Throws aji::Error if even the last user turn alone does not fit.
std::vector<int32_t> build_chat_prompt(const tokenizer::Tokenizer& tok, std::vector<align::Message>& history,
                                       int max_context, int reserve, int* dropped = nullptr);

class ChatSession {
 public:
  // Throws aji::Error (with the fix) when the tokenizer lacks the chat special tokens.
  ChatSession(model::Model& model, const tokenizer::Tokenizer& tok, infer::GenerateOptions options);

  void set_system(const std::string& text);  // empty = no system message
  std::string system() const;                // "" when there is none
  void reset();                              // clears the turns, keeps the system message
  // The whole conversation (never trimmed: only the prompt drops old turns).
  const std::vector<align::Message>& history() const { return history_; }

  using PieceFn = std::function<void(const std::string&)>;
  using StopFn = std::function<bool()>;  // polled after every token; true = stop the reply now

  // Adds the user turn, generates the reply (on_piece gets printable UTF-8 pieces as they
  // come; <|im_end|> is not passed on), adds it to the history and returns it. *dropped:
  // messages left out of the prompt (oldest first) to fit the context. When `stop` says
  // so (Ctrl-C), the reply ends there and the part so far is kept.
  std::string reply(const std::string& user, const PieceFn& on_piece = nullptr, int* dropped = nullptr,
                    const StopFn& stop = nullptr);
  // Replaces the last reply with a new one (a new seed). aji::Error when there is none.
  std::string retry(const PieceFn& on_piece = nullptr, int* dropped = nullptr, const StopFn& stop = nullptr);
  // Removes the last exchange (user turn and reply); false when there is none.
  bool undo();
  // Writes the conversation as one JSONL line in the SFT format ({"messages": [...]}),
  // atomically. aji::Error when there is no reply yet.
  void save(const std::filesystem::path& path) const;

  // Why the last reply ended (kCallback: `stop` said so).
  infer::StopReason last_stop() const { return last_stop_; }

 private:
  model::Model& model_;
  const tokenizer::Tokenizer& tok_;
  infer::GenerateOptions options_;
  int32_t im_end_ = -1;
  std::vector<align::Message> history_;
  uint64_t turn_ = 0;
  infer::StopReason last_stop_ = infer::StopReason::kStopToken;
};

}  // namespace aji::align
