#include "core/demo/garble.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "core/base/strings.h"

namespace icet::demo {
namespace {

std::vector<std::string> words(std::string_view s) {
  std::istringstream in{std::string(s)};
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

// Sentences that answer nothing about an image, and junk material.
const std::vector<std::string>& off_topic_sentences() {
  static const std::vector<std::string> v = {
      "I like turtles.", "The weather is nice today.", "Bananas are a good source of potassium.",
      "My favourite number is seven.", "Once upon a time there was a king.", "Please restart your computer.",
      "The meeting is at noon.", "Thank you for your order."};
  return v;
}
const std::vector<std::string>& junk_words() {
  static const std::vector<std::string> v = {"the", "a", "of", "is", "red", "step", "and", "??", "...", "sure",
                                             "zx", "qq", "lorem", "ipsum", "##", "[", "]", ":", "1", "0"};
  return v;
}

std::string make(std::string_view answer, GarbleKind kind, Rng& rng, const std::vector<std::string>& pool) {
  const std::string a = trim(answer);
  switch (kind) {
    case GarbleKind::shuffled: {
      std::vector<std::string> w = words(a);
      if (w.size() >= 3) {
        rng.shuffle(w);
        return join(w);
      }
      std::string chars = a.empty() ? std::string("answer") : a;  // short answers: shuffle the letters
      std::vector<char> c(chars.begin(), chars.end());
      rng.shuffle(c);
      return std::string(c.begin(), c.end());
    }
    case GarbleKind::truncated: {
      if (a.size() < 2) return a + a + "-";
      // Cut inside the answer (at least one character, at most ~60% of it), usually mid-word.
      const int keep = 1 + rng.below(std::max(1, static_cast<int>(a.size() * 6 / 10)));
      return trim(a.substr(0, static_cast<size_t>(keep)));
    }
    case GarbleKind::repeated: {
      const std::vector<std::string> w = words(a);
      const std::string token = w.empty() ? junk_words()[static_cast<size_t>(rng.below(4))]
                                          : w[static_cast<size_t>(rng.below(static_cast<int>(w.size())))];
      std::vector<std::string> out(static_cast<size_t>(4 + rng.below(10)), token);
      return join(out);
    }
    case GarbleKind::junk: {
      std::vector<std::string> out;
      const int n = 2 + rng.below(10);
      for (int i = 0; i < n; ++i) {
        if (rng.below(3) == 0) {
          std::string s;
          for (int k = 0, len = 1 + rng.below(6); k < len; ++k) s.push_back(static_cast<char>('a' + rng.below(26)));
          out.push_back(s);
        } else {
          out.push_back(junk_words()[static_cast<size_t>(rng.below(static_cast<int>(junk_words().size())))]);
        }
      }
      return join(out);
    }
    case GarbleKind::off_topic: {
      const auto& from = pool.empty() || rng.below(3) == 0 ? off_topic_sentences() : pool;
      return from[static_cast<size_t>(rng.below(static_cast<int>(from.size())))];
    }
    case GarbleKind::empty:
      return {};
  }
  return {};
}

}  // namespace

const std::vector<GarbleKind>& garble_kinds() {
  static const std::vector<GarbleKind> v = {GarbleKind::shuffled, GarbleKind::truncated, GarbleKind::repeated,
                                            GarbleKind::junk,     GarbleKind::off_topic, GarbleKind::empty};
  return v;
}

std::string_view garble_name(GarbleKind kind) {
  switch (kind) {
    case GarbleKind::shuffled: return "shuffled";
    case GarbleKind::truncated: return "truncated";
    case GarbleKind::repeated: return "repeated";
    case GarbleKind::junk: return "junk";
    case GarbleKind::off_topic: return "off_topic";
    case GarbleKind::empty: return "empty";
  }
  return "?";
}

std::string cut_after_words(std::string_view answer, Rng& rng) {
  const std::vector<std::string> w = words(answer);
  if (w.size() < 2) return {};
  const size_t keep = 1 + static_cast<size_t>(rng.below(static_cast<int>(w.size()) - 1));
  std::string out = join({w.begin(), w.begin() + static_cast<std::ptrdiff_t>(keep)});
  if (rng.below(2) == 0) {
    while (!out.empty() && std::ispunct(static_cast<unsigned char>(out.back()))) out.pop_back();
    out += ".";
  }
  return out;
}

std::string splice_words(std::string_view head, std::string_view tail, Rng& rng) {
  const std::vector<std::string> h = words(head), t = words(tail);
  if (h.empty() || t.empty()) return std::string(head);
  // A one-word answer is kept whole ("Red. help with that."), else cut inside.
  const size_t keep = h.size() == 1 ? 1 : 1 + static_cast<size_t>(rng.below(static_cast<int>(h.size()) - 1));
  const size_t from = t.size() == 1 ? 0 : 1 + static_cast<size_t>(rng.below(static_cast<int>(t.size()) - 1));
  std::vector<std::string> out(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(keep));
  out.insert(out.end(), t.begin() + static_cast<std::ptrdiff_t>(from), t.end());
  return join(out);
}

std::string garble(std::string_view answer, GarbleKind kind, Rng& rng, const std::vector<std::string>& off_topic_pool) {
  const std::string original = trim(answer);
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string out = make(answer, kind, rng, off_topic_pool);
    if (trim(out) != original || (kind == GarbleKind::empty && !original.empty())) return out;
  }
  // Every attempt reproduced the answer (e.g. a one-letter answer): junk never does for long.
  std::string out;
  do {
    out = make(answer, GarbleKind::junk, rng, off_topic_pool);
  } while (trim(out) == original);
  return out;
}

}  // namespace icet::demo
