// The shared toy world of the post-training acceptance experiments (post-training spec
// §8.0): a character-level vocabulary of 22 ids, "a+b=c;" pretraining text, addition and
// pick-a-number chat tasks with a held-out split, the classification task of experiment B
// and the multiple-choice items of experiment G. Everything is deterministic from a seed
// (aji::Rng), so the experiments can be written as tests once the engine trains models.
//
// Vocabulary: <pad>=0 <bos>=1 <u>=2 </u>=3 <a>=4 </a>=5, then "0123456789+=?;ab" = 6..21.
// Conversation rendering (§1.1 in miniature): <bos>, then per turn
//   <u> user </u> <a> reply </a>
// with loss mask 1 exactly on the reply characters and </a>. Generation prompt:
// <bos> ... <u> user </u> <a>; generation stops at </a>.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aji/align/packing.h"
#include "aji/base/rng.h"

namespace aji::align::toy {

constexpr uint32_t kPad = 0, kBos = 1, kUserStart = 2, kUserEnd = 3, kAssistantStart = 4, kAssistantEnd = 5;
constexpr int kVocabSize = 22;
constexpr std::string_view kChars = "0123456789+=?;ab";  // ids 6..21

uint32_t char_id(char c);                          // throws aji::Error for a character outside the vocabulary
std::vector<uint32_t> encode(std::string_view text);  // characters only, never specials
// Characters as themselves, specials as "<pad>", "<bos>", "<u>", "</u>", "<a>", "</a>".
std::string decode(const std::vector<uint32_t>& ids);

// Held-out split: the pairs with (7a + b) mod 10 == 0 (10% of 0..99 × 0..99) never appear
// in SFT or RL training prompts.
inline bool is_heldout(int a, int b) { return (7 * a + b) % 10 == 0; }

// "a+b=c;" with a, b uniform in 0..99, no zero padding.
std::string equation(int a, int b);
// One pretraining row of row_len tokens: <bos> then a stream of equations, cropped.
// (The base checkpoint of §8.0 uses 49 = context 48 + 1.)
std::vector<uint32_t> pretrain_row(Rng& rng, int row_len = 49);

// An addition pair drawn uniformly from the training split (never held out).
std::pair<int, int> sample_training_pair(Rng& rng);
// n distinct held-out pairs in a seeded order (n <= 1000, the size of the held-out split).
std::vector<std::pair<int, int>> heldout_pairs(int n, uint64_t seed);

enum class ToyTaskKind { kAddition, kAdditionTwoTurn, kPickNumber };

struct ToyTurn {
  std::string user;
  std::string reply;
};

struct ToyConversation {
  ToyTaskKind kind = ToyTaskKind::kAddition;
  std::vector<ToyTurn> turns;
};

// Experiment A's SFT mixture: 50% one-turn addition, 35% two-turn addition, 15% pick a
// number ("x?" with x in 10..99 → a uniformly random number 10..99). Training pairs only.
ToyConversation sample_sft_conversation(Rng& rng);
ToyTurn addition_turn(int a, int b);  // user "a+b=", reply "c"
ToyTurn pick_number_turn(Rng& rng);

// ids + loss mask; mask 1 on reply characters and </a>; mask_end_of_turn = false gives
// negative control (i) of experiment A.
RenderedSequence render(const ToyConversation& conv, bool mask_end_of_turn = true);
// <bos> [history turns rendered in full] <u> user </u> <a> — a strict prefix of the full
// rendering of the conversation that continues with this reply.
std::vector<uint32_t> render_prompt(const std::vector<ToyTurn>& history, std::string_view user);

// Reads a generated continuation (the tokens after the prompt): the reply is the text
// before </a>; stopped when </a> appears within max_reply_tokens + 1 tokens.
struct ReplyCheck {
  std::string reply;
  bool stopped = false;
};
ReplyCheck read_reply(const std::vector<uint32_t>& generated, int max_reply_tokens = 5);

// Experiment B: input <bos>a+b=, label 1 iff a + b >= 100 (49.5% positive).
struct ToyClassExample {
  std::vector<uint32_t> ids;
  int label = 0;
  int a = 0, b = 0;
};
ToyClassExample sample_classification(Rng& rng);

// Experiment G: 4-way multiple choice. Context <bos> [shots × "a+b=c;"] "a+b=", choices
// "c;" for the gold sum and 3 distinct distractors within ±12 (never negative), in a
// shuffled order. Shots are drawn with Rng(1234 + index) and never repeat the item.
struct ToyMcItem {
  std::vector<uint32_t> context;
  std::vector<std::vector<uint32_t>> choices;  // 4 continuations
  int gold = 0;                                // index of the correct choice
  int a = 0, b = 0;
};
ToyMcItem make_mc_item(int index, int shots, uint64_t seed);

}  // namespace aji::align::toy
