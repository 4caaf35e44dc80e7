#include "server/scheduler/output_text.h"

#include <algorithm>
#include <utility>

namespace switchyard {

OutputText::OutputText(const Tokenizer& tokenizer, bool skip_special_tokens,
                       std::vector<std::string> stop_strings, bool include_stop_string,
                       bool clean_up_spaces)
    : stream_(tokenizer.NewDecodeStream(skip_special_tokens, clean_up_spaces)),
      stops_(std::move(stop_strings)),
      include_stop_(include_stop_string) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

bool OutputText::Push(int32_t token, std::string* out) {
  stream_.Push(token, &pending_);
  return Release(out);
}

void OutputText::Finish(std::string* out) {
  stream_.Finish(&pending_);
  if (!Release(out)) out->append(pending_);
  pending_.clear();
}

bool OutputText::Release(std::string* out) {
  // The earliest stop string ends the text. Held-back text never contained a whole stop string,
  // so a match always lies in pending_.
  size_t best = std::string::npos, best_len = 0;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at != std::string::npos && (at < best || (at == best && s.size() > best_len))) {
      best = at;
      best_len = s.size();
    }
  }
  if (best != std::string::npos) {
    out->append(pending_, 0, include_stop_ ? best + best_len : best);
    pending_.clear();
    return true;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  out->append(pending_, 0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return false;
}

}  // namespace switchyard
