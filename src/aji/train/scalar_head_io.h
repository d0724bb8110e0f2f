// Saving and loading a model::ScalarHead (reward / value head) as safetensors:
// "score.weight" (1,C) as Hugging Face's AutoModelForSequenceClassification(num_labels=1)
// stores it; "score.bias" (1) only when the head's offset b is non-zero (an aji extension,
// e.g. a reward model re-centred after training). Written atomically.
// Lives in train/ because safetensors does (model/ must not include train/).
#pragma once

#include <filesystem>

#include "aji/model/scalar_head.h"

namespace aji::train {

void save_scalar_head(const std::filesystem::path& path, const model::ScalarHead& head);
// expected_d_model > 0: a head of another width is an aji::Error naming the file.
model::ScalarHead load_scalar_head(const std::filesystem::path& path, int expected_d_model = 0);

}  // namespace aji::train
