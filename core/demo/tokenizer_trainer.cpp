#include "core/demo/tokenizer_trainer.h"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "core/demo/corpus.h"
#include "core/text/sentencepiece_writer.h"

namespace icet::demo {
namespace {

#include "core/safety/llama_guard_templates.inc"

const std::string kSpace = "\xE2\x96\x81";  // "▁"

}  // namespace

std::vector<std::string> utf8_symbols(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + n > text.size()) n = 1;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) {
        n = 1;
        break;
      }
    }
    out.emplace_back(text.substr(i, n));
    i += n;
  }
  return out;
}

BpeResult learn_bpe(std::vector<BpeWord> words, size_t max_merges, int64_t min_count) {
  BpeResult result;
  {
    std::map<std::string, int64_t> freq;
    for (const auto& w : words) {
      for (const auto& s : w.symbols) freq[s] += w.count;
    }
    std::vector<std::pair<std::string, int64_t>> sorted(freq.begin(), freq.end());
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    for (const auto& [s, n] : sorted) result.alphabet.push_back(s);
  }
  for (size_t step = 0; step < max_merges; ++step) {
    // Recount every step: the demo corpora are small (thousands of distinct words).
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const auto& w : words) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) pairs[{w.symbols[i], w.symbols[i + 1]}] += w.count;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [p, n] : pairs) {  // map order = byte order: the first maximum wins ties
      if (n > best_count) {
        best = &p;
        best_count = n;
      }
    }
    if (best == nullptr || best_count < min_count) break;
    const auto merge = *best;
    result.merges.push_back(merge);
    const std::string joined = merge.first + merge.second;
    for (auto& w : words) {
      std::vector<std::string> next;
      next.reserve(w.symbols.size());
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == merge.first && w.symbols[i + 1] == merge.second) {
          next.push_back(joined);
          ++i;
        } else {
          next.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(next);
    }
  }
  return result;
}

std::vector<std::string> train_sentencepiece_pieces(const std::vector<std::string>& texts,
                                                    const SentencePieceTrainOptions& options) {
  // Words as SentencePiece sees them: dummy prefix, spaces -> "▁", split before every "▁".
  std::map<std::string, int64_t> counts;
  for (const auto& t : texts) {
    std::string escaped = kSpace;
    for (char c : t) {
      if (c == ' ') escaped += kSpace;
      else escaped += c;
    }
    size_t start = 0;
    while (start < escaped.size()) {
      // `escaped` starts with "▁", so every word starts at one.
      const size_t next = escaped.find(kSpace, start + kSpace.size());
      const size_t end = next == std::string::npos ? escaped.size() : next;
      if (end > start) ++counts[escaped.substr(start, end - start)];
      start = end;
    }
  }
  std::vector<BpeWord> words;
  for (const auto& [w, n] : counts) words.push_back({utf8_symbols(w), n});
  // Pieces = merges + alphabet; reserve the alphabet's share of the budget.
  const BpeResult bpe = learn_bpe(words, 1'000'000, options.min_count);  // learn all, then cut
  const size_t alphabet = bpe.alphabet.size();
  const size_t merges = options.max_pieces > alphabet ? std::min(bpe.merges.size(), options.max_pieces - alphabet) : 0;
  std::vector<std::string> pieces;
  std::unordered_map<std::string, bool> seen;
  for (size_t i = 0; i < merges; ++i) {
    std::string p = bpe.merges[i].first + bpe.merges[i].second;
    if (!seen.emplace(p, true).second) continue;
    pieces.push_back(std::move(p));
  }
  for (const auto& a : bpe.alphabet) {
    if (seen.emplace(a, true).second) pieces.push_back(a);
  }
  return pieces;
}

size_t write_trained_sentencepiece(const std::filesystem::path& file, const std::vector<std::string>& texts,
                                   const SentencePieceTrainOptions& options) {
  const auto vocab = text::byte_fallback_vocabulary(train_sentencepiece_pieces(texts, options));
  text::write_sentencepiece_model(file, vocab);
  return vocab.size();
}

std::vector<std::string> demo_tokenizer_texts(uint64_t seed) {
  std::vector<std::string> texts = template_texts();
  for (const auto& ex : make_examples(Split::Train, 3000, seed)) {
    texts.push_back("USER: \n" + ex.prompt + " ASSISTANT: " + ex.answer);
    if (ex.harmful) texts.push_back(ex.refusal);
  }
  // The Llama Guard 3 template (the demo guard shares this tokenizer), and its verdicts.
  for (int i = 0; i < 20; ++i) texts.emplace_back(kLlamaGuard3);
  texts.emplace_back("safe");
  texts.emplace_back("unsafe\nS1");
  for (int i = 1; i <= 14; ++i) texts.push_back("unsafe\nS" + std::to_string(i));
  return texts;
}

}  // namespace icet::demo
