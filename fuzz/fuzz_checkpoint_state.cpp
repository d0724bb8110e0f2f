// The state files a run or model directory carries besides the weights: optimizer.bin
// (AdamW moments), the data directory's manifest.json, the classifier's labels.json and
// the loader cursor inside trainer_state.json. The first input byte picks the file.
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "aji/align/classify_data.h"
#include "aji/train/loader.h"
#include "aji/train/optimizer.h"
#include "aji/train/shards.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::train;
  if (size < 1) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: {  // optimizer.bin of a 4-parameter model
      const auto path = aji::fuzz::write_input("optimizer.bin", body);
      aji::fuzz::run_reader(path, [&] {
        AdamW opt(4, AdamWConfig{});
        opt.load(path);
      });
      break;
    }
    case 1: {  // DATA_DIR/manifest.json
      const auto path = aji::fuzz::write_input("manifest.json", body);
      aji::fuzz::run_reader(path, [&] {
        DataManifest m = DataManifest::load(path.parent_path());
        // What was read must be written back the same way.
        DataManifest again = DataManifest::from_json(m.to_json(), "again");
        if (again.to_json() != m.to_json()) std::abort();
      });
      break;
    }
    case 2: {  // classifier labels.json
      const auto path = aji::fuzz::write_input("labels.json", body);
      aji::fuzz::run_reader(path, [&] {
        aji::align::LabelSet labels = aji::align::LabelSet::load(path);
        for (size_t i = 0; i < labels.size(); ++i)
          if (labels.index_of(labels.names[i]) != static_cast<int>(i)) std::abort();
      });
      break;
    }
    default: {  // trainer_state.json's "loader" cursor (memory safety only: the resume
                // code reports its json exceptions through the CLI's generic handler)
      nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
      if (j.is_discarded()) break;
      try {
        (void)LoaderCursor::from_json(j);
      } catch (const std::exception&) {
      }
      break;
    }
  }
  return 0;
}
