#include "aji/align/synthetic_tasks.h"

#include <algorithm>

#include "aji/base/error.h"

namespace aji::align::toy {

uint32_t char_id(char c) {
  size_t at = kChars.find(c);
  if (at == std::string_view::npos)
    throw Error(std::string("character '") + c + "' is not in the toy vocabulary \"" + std::string(kChars) + "\"");
  return static_cast<uint32_t>(6 + at);
}

std::vector<uint32_t> encode(std::string_view text) {
  std::vector<uint32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(char_id(c));
  return ids;
}

std::string decode(const std::vector<uint32_t>& ids) {
  static const char* kSpecial[] = {"<pad>", "<bos>", "<u>", "</u>", "<a>", "</a>"};
  std::string out;
  for (uint32_t id : ids) {
    if (id < 6) out += kSpecial[id];
    else if (id < static_cast<uint32_t>(kVocabSize)) out += kChars[id - 6];
    else out += "<?" + std::to_string(id) + ">";
  }
  return out;
}

std::string equation(int a, int b) { return std::to_string(a) + "+" + std::to_string(b) + "=" + std::to_string(a + b) + ";"; }

std::vector<uint32_t> pretrain_row(Rng& rng, int row_len) {
  std::vector<uint32_t> row{kBos};
  while (static_cast<int>(row.size()) < row_len) {
    int a = static_cast<int>(rng.below(100)), b = static_cast<int>(rng.below(100));
    for (char c : equation(a, b)) row.push_back(char_id(c));
  }
  row.resize(row_len);
  return row;
}

std::pair<int, int> sample_training_pair(Rng& rng) {
  for (;;) {
    int a = static_cast<int>(rng.below(100)), b = static_cast<int>(rng.below(100));
    if (!is_heldout(a, b)) return {a, b};
  }
}

std::vector<std::pair<int, int>> heldout_pairs(int n, uint64_t seed) {
  std::vector<std::pair<int, int>> all;
  for (int a = 0; a < 100; ++a)
    for (int b = 0; b < 100; ++b)
      if (is_heldout(a, b)) all.push_back({a, b});
  if (n < 0 || n > static_cast<int>(all.size()))
    throw Error("asked for " + std::to_string(n) + " held-out pairs; the split has " + std::to_string(all.size()));
  Rng rng(seed);
  for (size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[rng.below(i)]);
  all.resize(n);
  return all;
}

ToyTurn addition_turn(int a, int b) { return {std::to_string(a) + "+" + std::to_string(b) + "=", std::to_string(a + b)}; }

ToyTurn pick_number_turn(Rng& rng) {
  int x = 10 + static_cast<int>(rng.below(90));
  int y = 10 + static_cast<int>(rng.below(90));
  return {std::to_string(x) + "?", std::to_string(y)};
}

ToyConversation sample_sft_conversation(Rng& rng) {
  ToyConversation conv;
  uint64_t r = rng.below(100);
  if (r < 50) {
    conv.kind = ToyTaskKind::kAddition;
    auto [a, b] = sample_training_pair(rng);
    conv.turns.push_back(addition_turn(a, b));
  } else if (r < 85) {
    conv.kind = ToyTaskKind::kAdditionTwoTurn;
    for (int k = 0; k < 2; ++k) {
      auto [a, b] = sample_training_pair(rng);
      conv.turns.push_back(addition_turn(a, b));
    }
  } else {
    conv.kind = ToyTaskKind::kPickNumber;
    conv.turns.push_back(pick_number_turn(rng));
  }
  return conv;
}

namespace {
void append(RenderedSequence& s, uint32_t id, uint8_t mask) {
  s.ids.push_back(id);
  s.loss_mask.push_back(mask);
}
void append_text(RenderedSequence& s, std::string_view text, uint8_t mask) {
  for (char c : text) append(s, char_id(c), mask);
}
}  // namespace

RenderedSequence render(const ToyConversation& conv, bool mask_end_of_turn) {
  RenderedSequence s;
  append(s, kBos, 0);
  for (const ToyTurn& t : conv.turns) {
    append(s, kUserStart, 0);
    append_text(s, t.user, 0);
    append(s, kUserEnd, 0);
    append(s, kAssistantStart, 0);
    append_text(s, t.reply, 1);
    append(s, kAssistantEnd, mask_end_of_turn ? 1 : 0);
  }
  return s;
}

std::vector<uint32_t> render_prompt(const std::vector<ToyTurn>& history, std::string_view user) {
  ToyConversation past;
  past.turns = history;
  std::vector<uint32_t> ids = render(past).ids;
  ids.push_back(kUserStart);
  for (char c : user) ids.push_back(char_id(c));
  ids.push_back(kUserEnd);
  ids.push_back(kAssistantStart);
  return ids;
}

ReplyCheck read_reply(const std::vector<uint32_t>& generated, int max_reply_tokens) {
  ReplyCheck out;
  for (size_t i = 0; i < generated.size(); ++i) {
    if (generated[i] == kAssistantEnd) {
      out.stopped = static_cast<int>(i) <= max_reply_tokens;
      return out;
    }
    if (generated[i] >= 6 && generated[i] < static_cast<uint32_t>(kVocabSize)) out.reply += kChars[generated[i] - 6];
    else out.reply += decode({generated[i]});
  }
  return out;
}

ToyClassExample sample_classification(Rng& rng) {
  ToyClassExample ex;
  ex.a = static_cast<int>(rng.below(100));
  ex.b = static_cast<int>(rng.below(100));
  ex.label = ex.a + ex.b >= 100 ? 1 : 0;
  ex.ids.push_back(kBos);
  for (char c : std::to_string(ex.a) + "+" + std::to_string(ex.b) + "=") ex.ids.push_back(char_id(c));
  return ex;
}

ToyMcItem make_mc_item(int index, int shots, uint64_t seed) {
  ToyMcItem item;
  Rng rng(seed * 1000003ULL + static_cast<uint64_t>(index));
  item.a = static_cast<int>(rng.below(100));
  item.b = static_cast<int>(rng.below(100));
  const int gold = item.a + item.b;

  item.context.push_back(kBos);
  Rng shot_rng(1234 + static_cast<uint64_t>(index));
  for (int k = 0; k < shots;) {
    int a = static_cast<int>(shot_rng.below(100)), b = static_cast<int>(shot_rng.below(100));
    if (a == item.a && b == item.b) continue;  // never show the evaluated item
    for (char c : equation(a, b)) item.context.push_back(char_id(c));
    ++k;
  }
  for (char c : std::to_string(item.a) + "+" + std::to_string(item.b) + "=") item.context.push_back(char_id(c));

  std::vector<int> candidates;
  for (int v = std::max(0, gold - 12); v <= gold + 12; ++v)
    if (v != gold) candidates.push_back(v);
  std::vector<int> values{gold};
  for (int k = 0; k < 3; ++k) {
    size_t j = k + rng.below(candidates.size() - k);
    std::swap(candidates[k], candidates[j]);
    values.push_back(candidates[k]);
  }
  for (size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[rng.below(i)]);
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] == gold) item.gold = static_cast<int>(i);
    item.choices.push_back(encode(std::to_string(values[i]) + ";"));
  }
  return item;
}

}  // namespace aji::align::toy
