#include "aji/train/scalar_head_io.h"

#include <algorithm>
#include <string>

#include "aji/base/error.h"
#include "aji/train/safetensors.h"

namespace aji::train {

void save_scalar_head(const std::filesystem::path& path, const model::ScalarHead& head) {
  AJI_CHECK(head.d_model > 0 && (int)head.w.size() == head.d_model, "save_scalar_head: empty head");
  std::vector<SafeTensorView> t = {{"score.weight", {1, head.d_model}, head.w.data()}};
  if (head.b != 0.0f) t.push_back({"score.bias", {1}, &head.b});
  save_safetensors(path, t, {{"format", "aji-scalar-head"}});
}

model::ScalarHead load_scalar_head(const std::filesystem::path& path, int expected_d_model) {
  const SafeTensorsFile f = SafeTensorsFile::load(path);
  if (!f.has("score.weight"))
    throw Error("not a scalar head: score.weight is missing")
        .at(path.string())
        .fix("point at a reward or value model directory written by aji");
  const SafeTensor& w = f.tensors.at("score.weight");
  if (w.shape.size() != 2 || w.shape[0] != 1 || w.shape[1] <= 0) {
    std::string shape;
    for (int64_t d : w.shape) {
      if (!shape.empty()) shape += ',';
      shape += std::to_string(d);
    }
    throw Error("score.weight has shape (" + shape + "); a scalar head is (1,C)")
        .at(path.string())
        .fix("a (n,C) score.weight is a class head (aji classify); use a reward or value model directory");
  }
  if (expected_d_model > 0 && w.shape[1] != expected_d_model)
    throw Error("scalar head width " + std::to_string(w.shape[1]) + " does not match the model's d_model " +
                std::to_string(expected_d_model))
        .at(path.string())
        .fix("load the head with the model it was trained with");
  model::ScalarHead h((int)w.shape[1]);
  std::copy(w.data.begin(), w.data.end(), h.w.begin());
  if (f.has("score.bias")) {
    const SafeTensor& b = f.tensors.at("score.bias");
    if (b.data.size() != 1) throw Error("score.bias of a scalar head must hold one value").at(path.string());
    h.b = b.data[0];
  }
  return h;
}

}  // namespace aji::train
