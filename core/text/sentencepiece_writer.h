#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace icet::text {

// Writes SentencePiece tokenizer.model files (protobuf ModelProto) for synthetic checkpoints
// in tests and benchmarks: BPE, byte fallback, unk=0, bos=1, eos=2, identity normalizer
// (dummy prefix on, whitespace kept), the settings of LLaMA-family tokenizers.
struct SentencePieceEntry {
  enum Type { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
  std::string piece;
  float score = 0.0F;
  Type type = Normal;
};

// <unk>, <s>, </s>, the 256 byte pieces <0x00>..<0xFF>, then `pieces` in order with
// descending scores (earlier = merged first). Pieces use "▁" for a space.
std::vector<SentencePieceEntry> byte_fallback_vocabulary(const std::vector<std::string>& pieces);

void write_sentencepiece_model(const std::filesystem::path& file, const std::vector<SentencePieceEntry>& pieces);

}  // namespace icet::text
