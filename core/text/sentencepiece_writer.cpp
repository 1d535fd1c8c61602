#include "core/text/sentencepiece_writer.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/base/error.h"

namespace icet::text {
namespace {

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void key(std::string& out, int field, int wire) { varint(out, (static_cast<uint64_t>(field) << 3) | wire); }

void int_field(std::string& out, int field, int64_t v) {
  key(out, field, 0);
  varint(out, static_cast<uint64_t>(v));  // negative int32 -> 10-byte two's complement, as protobuf
}

void bytes_field(std::string& out, int field, const std::string& bytes) {
  key(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}

void float_field(std::string& out, int field, float v) {
  key(out, field, 5);
  char raw[4];
  std::memcpy(raw, &v, 4);  // little-endian hosts only (x86-64, arm64)
  out.append(raw, 4);
}

}  // namespace

std::vector<SentencePieceEntry> byte_fallback_vocabulary(const std::vector<std::string>& pieces) {
  std::vector<SentencePieceEntry> v = {{"<unk>", 0, SentencePieceEntry::Unknown},
                                       {"<s>", 0, SentencePieceEntry::Control},
                                       {"</s>", 0, SentencePieceEntry::Control}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    v.push_back({name, 0, SentencePieceEntry::Byte});
  }
  float score = 0.0F;
  for (const auto& p : pieces) {
    v.push_back({p, score, SentencePieceEntry::Normal});
    score -= 1.0F;
  }
  return v;
}

void write_sentencepiece_model(const std::filesystem::path& file, const std::vector<SentencePieceEntry>& pieces) {
  std::string model;
  for (const auto& p : pieces) {  // ModelProto.pieces = 1
    std::string sp;
    bytes_field(sp, 1, p.piece);
    float_field(sp, 2, p.score);
    int_field(sp, 3, p.type);
    bytes_field(model, 1, sp);
  }
  std::string trainer;  // ModelProto.trainer_spec = 2
  int_field(trainer, 3, 2);    // model_type = BPE
  int_field(trainer, 35, 1);   // byte_fallback
  int_field(trainer, 40, 0);   // unk_id
  int_field(trainer, 41, 1);   // bos_id
  int_field(trainer, 42, 2);   // eos_id
  int_field(trainer, 43, -1);  // pad_id
  bytes_field(model, 2, trainer);
  std::string normalizer;  // ModelProto.normalizer_spec = 3
  bytes_field(normalizer, 1, "identity");
  int_field(normalizer, 3, 1);  // add_dummy_prefix
  int_field(normalizer, 4, 0);  // remove_extra_whitespaces
  int_field(normalizer, 5, 1);  // escape_whitespaces
  bytes_field(model, 3, normalizer);

  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(model.data(), static_cast<std::streamsize>(model.size()));
  if (!out) {
    throw EnvironmentError(file.string() + ": cannot write the tokenizer model");
  }
}

}  // namespace icet::text
