// The web chat page served at `/`: one self-contained HTML document (no build step, no
// CDN), compiled into the binary.
#pragma once

#include <string_view>

namespace aji::serve {

// Placeholder until the page lands; the server serves whatever this returns at "/".
inline std::string_view chat_page_html() {
  return "<!doctype html><html><head><meta charset=\"utf-8\"><title>aji</title></head>"
         "<body><p>aji chat page: not built yet.</p></body></html>";
}

}  // namespace aji::serve
