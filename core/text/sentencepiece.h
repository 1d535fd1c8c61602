#pragma once

// SentencePiece `tokenizer.model` reader and BPE encoder/decoder, written against the behaviour
// of sentencepiece 0.1.97 (the version the HF reference fixtures were made with). No protobuf
// library: the ModelProto wire format is parsed here (libsentencepiece and libprotobuf clash with
// LibTorch's copy at load time, see the top-level CMakeLists.txt).
//
// Supported: BPE models with identity normalisation (LLaMA, Llama-2, Vicuna, Mistral, LLaVA).
// Unigram/word/char models, precompiled normalisation rules (nmt_nfkc) and whitespace-as-suffix
// models are rejected with an InputError rather than tokenised differently from SentencePiece.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace icet::text {

// ModelProto.SentencePiece.Type (sentencepiece_model.proto).
enum class PieceType : uint8_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

// TrainerSpec.ModelType.
enum class ModelType : uint8_t { unigram = 1, bpe = 2, word = 3, character = 4 };

// The NormalizerSpec fields that change encoding; defaults are the proto defaults.
struct NormalizerSpec {
  std::string name;
  bool has_precompiled_charsmap = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// The TrainerSpec fields used at inference; defaults are the proto defaults.
struct TrainerSpec {
  ModelType model_type = ModelType::unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int32_t unk_id = 0;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t pad_id = -1;
  std::optional<std::string> unk_surface;  // decode text of <unk>; SentencePiece default " ⁇ "
};

// One encoded piece, as SentencePiece's `encode(..., out_type=str)` returns it plus its id.
struct EncodedPiece {
  std::string piece;
  int32_t id = 0;
};

class SentencePieceModel;

// SentencePiece's Decode(pieces) as a left-to-right fold, so that streaming and batch decoding
// share one code path. Byte pieces are held until they form a UTF-8 character (or are proven
// invalid, then each bad byte becomes U+FFFD as in SentencePiece); everything else is final.
class SentencePieceDecoder {
 public:
  explicit SentencePieceDecoder(const SentencePieceModel& model) : model_(&model) {}
  // Appends to `out` the text of `piece` that later pieces cannot change.
  void push(std::string_view piece, std::string& out);
  // Appends what is still held (an unfinished byte sequence) and resets for a new Decode call.
  void finish(std::string& out);
  // True while nothing has been appended since the start of this Decode call.
  bool empty() const { return !wrote_ && pending_.empty(); }

 private:
  void drain_bytes(bool final_bytes, std::string& out);
  void append(std::string_view text, std::string& out);

  const SentencePieceModel* model_;
  std::string pending_;  // raw bytes of the current run of byte pieces not yet emitted
  bool wrote_ = false;   // this Decode call has produced text
  bool bos_ws_seen_ = false;
  bool is_bos_ws_ = true;  // no visible piece yet: a leading "▁" may still be consumed
};

class SentencePieceModel {
 public:
  // Parses a serialised ModelProto. `source` names the file in error messages.
  // Throws icet::InputError on truncated/corrupt data or an unsupported model.
  static SentencePieceModel parse(std::string_view bytes, const std::string& source);
  static SentencePieceModel load(const std::filesystem::path& file);

  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  bool valid_id(int64_t id) const { return id >= 0 && id < size(); }
  const std::string& piece(int64_t id) const { return pieces_[static_cast<size_t>(id)].piece; }
  float score(int64_t id) const { return pieces_[static_cast<size_t>(id)].score; }
  PieceType type(int64_t id) const { return pieces_[static_cast<size_t>(id)].type; }
  // The byte a <0xXX> piece stands for, or -1.
  int byte_value(int64_t id) const;

  // SentencePiece PieceToId: control/unknown/byte pieces first, then the others, else unk id.
  int32_t piece_to_id(std::string_view piece) const;
  // Exact lookup without the unk fallback.
  std::optional<int32_t> find(std::string_view piece) const;
  int32_t unk_id() const { return unk_id_; }

  const NormalizerSpec& normalizer() const { return normalizer_; }
  const TrainerSpec& trainer() const { return trainer_; }
  const std::string& source() const { return source_; }

  // HF's slow LlamaTokenizer with legacy=false reloads the model with add_dummy_prefix=false;
  // this flag changes both encoding and decoding, as it does inside SentencePiece.
  void set_add_dummy_prefix(bool on) { normalizer_.add_dummy_prefix = on; }

  // SentencePiece's normaliser (identity rules): whitespace handling, "▁" escaping, the dummy
  // prefix, and U+FFFD for each malformed UTF-8 byte.
  std::string normalize(std::string_view input) const;
  // SentencePiece Encode: normalise, BPE-merge, resegment unused pieces, byte fallback (or
  // merge runs of unknown pieces into one <unk>).
  std::vector<EncodedPiece> encode(std::string_view text) const;
  // SentencePiece Decode of piece strings.
  std::string decode(const std::vector<std::string>& pieces) const;

 private:
  friend class SentencePieceDecoder;

  struct Piece {
    std::string piece;
    float score = 0.0f;
    PieceType type = PieceType::normal;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  void index_pieces();
  // Length of the user-defined symbol at the start of `text`, or 0.
  size_t match_user_defined(std::string_view text) const;
  std::vector<std::pair<std::string_view, int32_t>> bpe(std::string_view normalized) const;

  std::string source_;
  std::vector<Piece> pieces_;
  TrainerSpec trainer_;
  NormalizerSpec normalizer_;
  PieceMap normal_;    // normal, user-defined and unused pieces: the ones BPE may produce
  PieceMap reserved_;  // control, unknown and byte pieces
  std::vector<int16_t> byte_values_;  // per id: the byte of a <0xXX> piece, else -1
  // User-defined symbols by first byte, longest first (SentencePiece matches the longest).
  std::vector<std::vector<std::string>> user_defined_;
  int32_t unk_id_ = 0;
  std::string unk_surface_;
};

}  // namespace icet::text
