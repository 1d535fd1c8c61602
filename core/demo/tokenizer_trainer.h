#pragma once

// A generic byte-pair-encoding merge learner and a SentencePiece-style BPE tokenizer trainer
// for the demo world. The trainer writes tokenizer.model through core/text/sentencepiece_writer
// (LLaMA settings: byte fallback, unk=0, bos=1, eos=2, dummy prefix), so any character it never
// saw still encodes (as bytes).

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace icet::demo {

// One word as its symbols (initially characters or bytes) and how often it occurs.
struct BpeWord {
  std::vector<std::string> symbols;
  int64_t count = 1;
};

struct BpeResult {
  std::vector<std::string> alphabet;  // initial symbols, most frequent first (ties: byte order)
  std::vector<std::pair<std::string, std::string>> merges;  // in learning order
};

// Learns up to `max_merges` merges: each step merges the most frequent adjacent pair (ties: the
// byte-wise smallest pair), stopping early when no pair occurs at least `min_count` times.
// Deterministic; symbols are opaque strings (UTF-8 characters, GPT-2 byte characters, ...).
BpeResult learn_bpe(std::vector<BpeWord> words, size_t max_merges, int64_t min_count = 2);

// UTF-8 text -> its characters (an invalid byte becomes a one-byte symbol).
std::vector<std::string> utf8_symbols(std::string_view text);

struct SentencePieceTrainOptions {
  size_t max_pieces = 1200;  // learned pieces (merges + alphabet), not counting <unk>/<s>/</s>/bytes
  int64_t min_count = 2;
};

// SentencePiece-style pieces learned from `texts`: spaces become "▁", every text gets the dummy
// prefix, and pieces never cross a "▁" (a word is "▁" plus the characters up to the next one).
// -> pieces in vocabulary order: merged pieces (first learned first), then the alphabet.
std::vector<std::string> train_sentencepiece_pieces(const std::vector<std::string>& texts,
                                                    const SentencePieceTrainOptions& options = {});

// train_sentencepiece_pieces + write_sentencepiece_model(byte_fallback_vocabulary(pieces)).
// -> the number of pieces in the written model.
size_t write_trained_sentencepiece(const std::filesystem::path& file, const std::vector<std::string>& texts,
                                   const SentencePieceTrainOptions& options = {});

// The texts the demo tokenizer trains on: the demo corpus (templates, answers, a sample of
// training prompts, the LLaVA chat words) and the Llama Guard 3 template, so the demo guard can
// share the tokenizer.
std::vector<std::string> demo_tokenizer_texts(uint64_t seed);

}  // namespace icet::demo
