#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>

#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>

#include "support/errors.h"
#include "core/base/error.h"
#include "core/io/load_bench.h"
#include "core/io/safetensors.h"
#include "core/models/weights.h"

namespace fs = std::filesystem;
using icet::io::DType;
using icet::io::SafetensorsFile;
using icet::io::TensorStore;

namespace {

using icet::test::input_error_of;

bool contains_all(const std::string& text, std::initializer_list<std::string> pieces,
                  std::string* missing) {
  for (const auto& piece : pieces) {
    if (text.find(piece) == std::string::npos) {
      *missing = piece;
      return false;
    }
  }
  return true;
}

}  // namespace

// Expects `expr` to throw icet::InputError whose message contains every following string.
#define EXPECT_INPUT_ERROR(expr, ...)                                    \
  do {                                                                   \
    const std::string msg_ = input_error_of([&] { (void)(expr); });      \
    QVERIFY2(!msg_.empty(), "expected an icet::InputError from " #expr); \
    std::string missing_;                                                \
    QVERIFY2(contains_all(msg_, {__VA_ARGS__}, &missing_),               \
             (msg_ + "\n   (missing: \"" + missing_ + "\")").c_str());   \
  } while (0)

class TestSafetensors : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir dir_;

  static fs::path fixture(const std::string& rel) { return fs::path(ICET_FIXTURES) / rel; }

  fs::path path(const std::string& name) const {
    return fs::path(dir_.path().toStdString()) / name;
  }

  // A file with exactly this header text and data area (the length prefix is computed).
  fs::path writeRaw(const std::string& name, const std::string& header,
                    const std::string& data = std::string(64, '\0')) const {
    const fs::path p = path(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << data;
    return p;
  }

  static void writeText(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
  }

  static std::string readBytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  static bool inside(const at::Tensor& t, const SafetensorsFile& file) {
    const auto data = file.data_area();
    const auto* p = static_cast<const std::byte*>(t.data_ptr());
    return p >= data.data() && p + t.nbytes() <= data.data() + data.size();
  }

  // Two shards and an index in `folder`: a, b in shard 1; c in shard 2.
  void writeShards(const fs::path& folder, float c_value) const {
    fs::create_directories(folder);
    icet::io::save_safetensors(
        folder / "model-00001-of-00002.safetensors",
        {{"a", at::arange(6, at::kFloat).reshape({2, 3})}, {"b", at::arange(4, at::kLong)}});
    icet::io::save_safetensors(folder / "model-00002-of-00002.safetensors",
                               {{"c", at::full({3}, c_value, at::kFloat)}});
    writeText(folder / "model.safetensors.index.json",
              R"({"metadata": {"total_size": 68}, "weight_map": {
                   "a": "model-00001-of-00002.safetensors",
                   "b": "model-00001-of-00002.safetensors",
                   "c": "model-00002-of-00002.safetensors"}})");
  }

 private Q_SLOTS:
  void initTestCase() { QVERIFY(dir_.isValid()); }

  // ---- round trips ---------------------------------------------------------------------

  void roundTripsEveryDtype() {
    const at::Tensor base = at::randn({3, 5}, at::kFloat).mul(50);
    std::vector<std::pair<std::string, at::Tensor>> tensors = {
        {"f32", base},
        {"f16", base.to(at::kHalf)},
        {"bf16", base.to(at::kBFloat16)},
        {"i64", at::arange(-7, 8, at::kLong).reshape({3, 5}).mul(int64_t{1'000'000'000'000})},
        {"i32", base.to(at::kInt)},
        {"i16", base.to(at::kShort)},
        {"i8", at::arange(-128, 128, at::kInt).to(at::kChar)},
        {"u8", at::arange(0, 256, at::kInt).to(at::kByte)},
        {"bool", base.gt(0)},
        {"scalar", at::scalar_tensor(3.5, at::kFloat)},
        {"empty", at::empty({0, 4}, at::kFloat)},
        {"transposed", at::arange(6, at::kFloat).reshape({2, 3}).t()},
        {"odd_u8", at::arange(3, at::kInt).to(at::kByte)},  // 3 bytes, then wider types
    };
    const fs::path file = path("all_dtypes.safetensors");
    icet::io::save_safetensors(file, tensors, {{"format", "pt"}, {"note", "round trip"}});
    QVERIFY(!fs::exists(path("all_dtypes.safetensors.tmp")));

    const auto st = SafetensorsFile::open(file);
    QCOMPARE(st->names().size(), tensors.size());
    QCOMPARE(st->metadata().at("note"), std::string("round trip"));
    for (const auto& [name, expected] : tensors) {
      const at::Tensor t = st->tensor(name);
      QVERIFY2(t.scalar_type() == expected.scalar_type(), name.c_str());
      QCOMPARE(t.sizes().vec(), expected.sizes().vec());
      QVERIFY2(at::equal(t, expected), name.c_str());
      // The writer orders data by element size, so every tensor reads back zero-copy.
      QVERIFY2(t.numel() == 0 || inside(t, *st), name.c_str());
      const auto dtype = icet::io::from_scalar_type(expected.scalar_type());
      QVERIFY(dtype.has_value());
      QCOMPARE(st->info(name).dtype, *dtype);
      QCOMPARE(icet::io::to_scalar_type(*dtype), expected.scalar_type());
    }
    QCOMPARE(icet::io::dtype_name(DType::BF16), std::string_view("BF16"));
    QCOMPARE(icet::io::parse_dtype("BOOL"), std::optional<DType>(DType::BOOL));
    QVERIFY(!icet::io::parse_dtype("F64").has_value());
  }

  void headerIsPaddedAndReadableByOtherTools() {
    const fs::path file = path("padded.safetensors");
    icet::io::save_safetensors(file, {{"x", at::ones({3}, at::kByte)}});
    const std::string bytes = readBytes(file);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    QCOMPARE(n % 8, uint64_t{0});
    const auto header = nlohmann::json::parse(bytes.substr(8, n));
    QCOMPARE(header["x"]["dtype"].get<std::string>(), std::string("U8"));
    QVERIFY(header["x"]["data_offsets"] == nlohmann::json::parse("[0, 3]"));
    QVERIFY(!header.contains("__metadata__"));  // none given, none written
    QCOMPARE(bytes.size(), 8 + n + 3);
  }

  void saveOverwritesAtomically() {
    const fs::path file = path("overwrite.safetensors");
    icet::io::save_safetensors(file, {{"x", at::zeros({2}, at::kFloat)}});
    const auto old_file = SafetensorsFile::open(file);
    const at::Tensor old_x = old_file->tensor("x");
    icet::io::save_safetensors(file, {{"x", at::ones({2}, at::kFloat)}});
    QVERIFY(at::equal(SafetensorsFile::open(file)->tensor("x"), at::ones({2}, at::kFloat)));
    // rename() replaced the inode: the old mapping still sees the old bytes.
    QVERIFY(at::equal(old_x, at::zeros({2}, at::kFloat)));
  }

  void saveRejectsBadInputWithoutWriting() {
    const fs::path file = path("rejected.safetensors");
    EXPECT_INPUT_ERROR(icet::io::save_safetensors(file, {{"d", at::ones({2}, at::kDouble)}}),
                       file.string(), "'d'", "Double");
    EXPECT_INPUT_ERROR(
        icet::io::save_safetensors(file, {{"a", at::ones({1})}, {"a", at::ones({1})}}),
        file.string(), "'a'", "twice");
    EXPECT_INPUT_ERROR(icet::io::save_safetensors(file, {{"__metadata__", at::ones({1})}}),
                       "__metadata__");
    EXPECT_INPUT_ERROR(icet::io::save_safetensors(file, {{"u", at::Tensor()}}), "'u'", "undefined");
    EXPECT_INPUT_ERROR(icet::io::save_safetensors(file, {{"bad\xff", at::ones({1})}}),
                       file.string(), "UTF-8");
    QVERIFY(!fs::exists(file));
    QVERIFY(!fs::exists(path("rejected.safetensors.tmp")));
  }

  // ---- the HF reference fixtures --------------------------------------------------------

  void readsTheLlavaFixture() {
    const auto file = SafetensorsFile::open(fixture("hf-reference/llava/model.safetensors"));
    QCOMPARE(file->names().size(), std::size_t{128});
    QCOMPARE(file->metadata().at("format"), std::string("pt"));
    const std::string name = "language_model.model.layers.0.input_layernorm.weight";
    const auto& info = file->info(name);
    QCOMPARE(info.dtype, DType::F32);
    QCOMPARE(info.shape, std::vector<int64_t>{64});
    QCOMPARE(info.begin, uint64_t{204800});
    QCOMPARE(info.end, uint64_t{205056});
    const at::Tensor t = file->tensor(name);
    QCOMPARE(t.sizes().vec(), std::vector<int64_t>{64});
    QCOMPARE(t.scalar_type(), at::kFloat);
    // Values read independently with Python's struct module from the same file.
    QCOMPARE(t[0].item<float>(), 0.9988641142845154f);
    QCOMPARE(t[3].item<float>(), 0.9944647550582886f);
    QCOMPARE(file->tensor("language_model.lm_head.weight").sizes().vec(),
             (std::vector<int64_t>{400, 64}));

    const auto store = TensorStore::open_dir(fixture("hf-reference/llava"));
    QCOMPARE(store.names(), file->names());
    QCOMPARE(store.file_of(name), fixture("hf-reference/llava/model.safetensors"));
    QVERIFY(at::equal(store.get(name), t));
  }

  void readsTheLlavaReferences() {
    const auto refs = SafetensorsFile::open(fixture("hf-reference/llava/refs.safetensors"));
    QCOMPARE(refs->names().size(), std::size_t{40});
    QCOMPARE(refs->metadata().at("model_type"), std::string("llava"));
    const at::Tensor ids = refs->tensor("inputs.input_ids");
    QCOMPARE(ids.scalar_type(), at::kLong);
    QCOMPARE(ids.sizes().vec(), (std::vector<int64_t>{1, 46}));
    QCOMPARE(ids[0][0].item<int64_t>(), int64_t{1});
    QCOMPARE(ids[0][1].item<int64_t>(), int64_t{293});
    const at::Tensor gen = refs->tensor("generated_ids.default");
    QVERIFY(at::equal(gen.slice(0, 0, 3), at::tensor({293, 241, 233}, at::kLong)));
  }

  void readsEveryFixtureFile() {
    for (const auto& entry : fs::recursive_directory_iterator(fixture("hf-reference"))) {
      if (entry.path().extension() != ".safetensors") {
        continue;
      }
      const auto file = SafetensorsFile::open(entry.path());
      const auto data = file->data_area();
      for (const auto& name : file->names()) {
        // Python writers do not align: gpt2_rm/refs has I64 tensors at offsets = 4 mod 8.
        // Those are copied to aligned memory, everything else aliases the mapping.
        const auto& info = file->info(name);
        const at::Tensor t = file->tensor(name);
        const auto address = reinterpret_cast<std::uintptr_t>(data.data() + info.begin);
        const bool aligned = address % icet::io::item_size(info.dtype) == 0;
        QVERIFY2(inside(t, *file) == aligned, name.c_str());
        QVERIFY2(std::memcmp(t.data_ptr(), data.data() + info.begin, info.byte_size()) == 0,
                 name.c_str());
      }
    }
  }

  // ---- zero copy and conversion ---------------------------------------------------------

  void tensorsAliasTheMappingAndOutliveTheFile() {
    const fs::path file = path("alias.safetensors");
    icet::io::save_safetensors(file, {{"w", at::arange(1024, at::kFloat)}});
    const std::string before = readBytes(file);
    at::Tensor t;
    {
      const auto st = SafetensorsFile::open(file);
      t = st->tensor("w");
      QVERIFY(inside(t, *st));
      // Same bytes, same address: no copy on the way.
      QCOMPARE(t.data_ptr(), st->tensor("w").data_ptr());
      QCOMPARE(st->tensor("w", at::kFloat, at::kCPU).data_ptr(), t.data_ptr());
    }
    // The SafetensorsFile is gone; the tensor still owns the mapping.
    QCOMPARE(t[1023].item<float>(), 1023.0f);
    // Copy-on-write: an in-place op changes this process's copy, never the file.
    t.add_(1);
    QCOMPARE(t[0].item<float>(), 1.0f);
    QVERIFY(readBytes(file) == before);
    QCOMPARE(SafetensorsFile::open(file)->tensor("w")[0].item<float>(), 0.0f);
  }

  void unalignedTensorsAreCopied() {
    // A file from another writer: 1 byte of U8, then an F32 at data offset 1 (unaligned).
    const std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("f":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
    std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
    const float value = 2.5f;
    std::string data(1, '\x07');
    data.append(reinterpret_cast<const char*>(&value), 4);
    const auto st = SafetensorsFile::open(writeRaw("unaligned.safetensors", padded, data));
    const at::Tensor f = st->tensor("f");
    QCOMPARE(f[0].item<float>(), 2.5f);
    QVERIFY(!inside(f, *st));
    QCOMPARE(reinterpret_cast<std::uintptr_t>(f.data_ptr()) % 4, std::uintptr_t{0});
    QVERIFY(inside(st->tensor("u"), *st));
  }

  void convertsOnlyWhenAsked() {
    const fs::path file = path("convert.safetensors");
    const at::Tensor values = at::linspace(-4, 4, 17, at::kFloat);
    icet::io::save_safetensors(file, {{"x", values}, {"h", values.to(at::kHalf)}});
    const auto st = SafetensorsFile::open(file);
    const at::Tensor half = st->tensor("x", at::kHalf, at::Device(at::kCPU));
    QCOMPARE(half.scalar_type(), at::kHalf);
    QVERIFY(!inside(half, *st));
    QVERIFY(at::equal(half, values.to(at::kHalf)));  // these values are exact in F16
    const at::Tensor widened = st->tensor("h", at::kFloat, at::Device(at::kCPU));
    QVERIFY(at::equal(widened, values));
    QVERIFY(inside(st->tensor("h", at::kHalf, at::Device(at::kCPU)), *st));

    const auto store = TensorStore::open_file(file);
    QCOMPARE(store.get("x", at::kFloat, at::kCPU).data_ptr(), store.get("x").data_ptr());
    QCOMPARE(store.get("x", at::kBFloat16, at::kCPU).scalar_type(), at::kBFloat16);
  }

  void trainableWeightsArePrivateCopiesWithGrad() {
    const fs::path file = path("trainable.safetensors");
    const at::Tensor values = at::arange(6, at::kFloat).reshape({2, 3});
    icet::io::save_safetensors(file, {{"w", values}});
    const auto store = TensorStore::open_file(file);
    icet::models::LoadOptions options;
    options.trainable = true;
    icet::models::WeightLoader loader(store, options, "trainable.safetensors");
    at::Tensor w = loader.take("w", {2, 3});
    loader.finish();
    QVERIFY(w.requires_grad());
    QCOMPARE(loader.parameters().size(), size_t{1});
    QCOMPARE(loader.parameters()[0].first, std::string("w"));
    QCOMPARE(loader.parameters()[0].second.data_ptr(), w.data_ptr());  // the model's own tensor
    QVERIFY(w.data_ptr() != store.get("w").data_ptr());
    (w * w).sum().backward();
    QVERIFY(at::allclose(w.grad(), 2 * values));

    icet::models::WeightLoader frozen(store, {}, "trainable.safetensors");
    QVERIFY(!frozen.take("w", {2, 3}).requires_grad());
    QVERIFY(frozen.parameters().empty());
  }

  // ---- TensorStore ----------------------------------------------------------------------

  void opensAShardedCheckpoint() {
    const fs::path folder = path("sharded");
    writeShards(folder, 7.0f);
    const auto store = TensorStore::open_dir(folder);
    QCOMPARE(store.names(), (std::vector<std::string>{"a", "b", "c"}));
    QCOMPARE(store.files().size(), std::size_t{2});
    QCOMPARE(store.file_of("a").filename().string(),
             std::string("model-00001-of-00002.safetensors"));
    QCOMPARE(store.file_of("c").filename().string(),
             std::string("model-00002-of-00002.safetensors"));
    QVERIFY(at::equal(store.get("a"), at::arange(6, at::kFloat).reshape({2, 3})));
    QVERIFY(at::equal(store.get("b"), at::arange(4, at::kLong)));
    QCOMPARE(store.get("c")[2].item<float>(), 7.0f);
    QCOMPARE(store.info("b").dtype, DType::I64);
    QCOMPARE(store.metadata().at("total_size"), std::string("68"));
    QVERIFY(store.contains("c") && !store.contains("d"));
    EXPECT_INPUT_ERROR(store.get("d"), "model.safetensors.index.json", "'d'");

    // The index file itself opens the same checkpoint.
    const auto same = TensorStore::open_file(folder / "model.safetensors.index.json");
    QCOMPARE(same.names(), store.names());
  }

  void contentHashIsStableAndSeesTheWeights() {
    const fs::path one = path("hash_one");
    const fs::path two = path("hash_two");
    const fs::path other = path("hash_other");
    writeShards(one, 7.0f);
    writeShards(two, 7.0f);
    writeShards(other, 8.0f);  // same names, shapes and sizes; one value differs
    const std::string h1 = TensorStore::open_dir(one).content_hash();
    QCOMPARE(h1.size(), std::size_t{16});
    QCOMPARE(TensorStore::open_dir(one).content_hash(), h1);
    QCOMPARE(TensorStore::open_dir(two).content_hash(), h1);  // the folder is not hashed
    QVERIFY(TensorStore::open_dir(other).content_hash() != h1);
    QVERIFY(TensorStore::open_file(one / "model-00001-of-00002.safetensors").content_hash() != h1);
  }

  void openDirNamesWhatItFound() {
    const fs::path folder = path("no_weights");
    fs::create_directories(folder);
    icet::io::save_safetensors(folder / "adapter_model.safetensors", {{"x", at::ones({1})}});
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), folder.string(), "model.safetensors",
                       "adapter_model.safetensors");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(path("missing_folder")), "missing_folder");
  }

  // ---- bad files: one test per failure, each naming the file and tensor/key -------------

  void rejectsAFileShorterThan8Bytes() {
    const fs::path p = path("short.safetensors");
    writeText(p, "abc");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "8 bytes", "3 bytes");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(path("absent.safetensors")), "absent.safetensors");
  }

  void rejectsAHeaderBeyondTheFile() {
    const fs::path p = path("truncated_header.safetensors");
    const uint64_t n = 1000;
    std::string bytes(reinterpret_cast<const char*>(&n), 8);
    writeText(p, bytes + R"({"a":)");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "1000", "truncated");
  }

  void rejectsAnOversizedHeaderLength() {
    const fs::path p = path("huge_header.safetensors");
    const uint64_t n = 200'000'000;
    writeText(p, std::string(reinterpret_cast<const char*>(&n), 8) + "{}");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "100000000", "200000000");
  }

  void rejectsHeaderThatIsNotJson() {
    const fs::path p = writeRaw("not_json.safetensors", R"({"a": {"dtype": )");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "header", "invalid JSON");
  }

  void rejectsHeaderThatIsNotAnObject() {
    const fs::path p = writeRaw("array.safetensors", "[1, 2, 3]");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "object", "array");
  }

  void rejectsDuplicateTensorNames() {
    const fs::path p =
        writeRaw("dup.safetensors", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                    R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "twice");
  }

  void rejectsEntriesMissingAField() {
    const fs::path p1 =
        writeRaw("no_dtype.safetensors", R"({"w":{"shape":[1],"data_offsets":[0,4]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p1), p1.string(), "tensor 'w'", "dtype");
    const fs::path p2 =
        writeRaw("no_shape.safetensors", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p2), p2.string(), "tensor 'w'", "shape");
    const fs::path p3 = writeRaw("no_offsets.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p3), p3.string(), "tensor 'w'", "data_offsets");
  }

  void rejectsFieldsOfTheWrongType() {
    const std::pair<const char*, const char*> cases[] = {
        {R"({"w": 5})", "number"},
        {R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "dtype"},
        {R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "shape"},
        {R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "shape[0]"},
        {R"({"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}})", "shape[0]"},
        {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", "data_offsets"},
        {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})", "data_offsets"},
        {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "data_offsets"},
        {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", "data_offsets"},
    };
    int i = 0;
    for (const auto& [header, key] : cases) {
      const fs::path p = writeRaw("wrong_type_" + std::to_string(i++) + ".safetensors", header);
      EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", key);
    }
    const fs::path meta = writeRaw("bad_metadata.safetensors", R"({"__metadata__":{"k":1}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(meta), meta.string(), "__metadata__", "'k'", "string");
  }

  void rejectsAnUnknownDtype() {
    const fs::path p =
        writeRaw("f64.safetensors", R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "'F64'",
                       "F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
  }

  void rejectsNegativeDimensions() {
    const fs::path p = writeRaw("negative.safetensors",
                                R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "shape[1]", "-1");
  }

  void rejectsShapeThatDisagreesWithTheByteRange() {
    const fs::path p = writeRaw("mismatch.safetensors",
                                R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "24 bytes", "20 bytes");
    const fs::path big =
        writeRaw("overflow.safetensors",
                 R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(big), big.string(), "tensor 'w'", "64 bits");
  }

  void rejectsARangeOutsideTheDataArea() {
    const fs::path p = writeRaw("outside.safetensors",
                                R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                std::string(12, '\0'));
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "12 bytes", "[0, 16]");
  }

  void rejectsOverlappingRanges() {
    const fs::path p = writeRaw("overlap.safetensors",
                                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'b'", "tensor 'a'",
                       "overlaps");
    // A range nested in an earlier, longer one is caught too.
    const fs::path nested = writeRaw("nested.safetensors",
                                     R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
                                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                                     R"("c":{"dtype":"F32","shape":[1],"data_offsets":[20,24]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(nested), nested.string(), "tensor 'a'", "overlaps");
  }

  void rejectsBeginAfterEnd() {
    const fs::path p = writeRaw("reversed.safetensors",
                                R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})");
    EXPECT_INPUT_ERROR(SafetensorsFile::open(p), p.string(), "tensor 'w'", "[8, 4]");
  }

  void acceptsTrailingDataAndEmptyTensors() {
    const fs::path p = writeRaw("trailing.safetensors",
                                R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}})",
                                std::string(100, '\0'));
    const auto st = SafetensorsFile::open(p);
    QCOMPARE(st->names().size(), std::size_t{2});
    QCOMPARE(st->tensor("e").sizes().vec(), (std::vector<int64_t>{0, 3}));
  }

  void unknownNamesAreReportedWithTheFile() {
    const auto st = SafetensorsFile::open(fixture("hf-reference/llava/model.safetensors"));
    EXPECT_INPUT_ERROR(st->info("no.such.weight"), "model.safetensors", "'no.such.weight'");
    EXPECT_INPUT_ERROR(st->tensor("no.such.weight"), "model.safetensors", "'no.such.weight'");
  }

  // ---- bad indexes ----------------------------------------------------------------------

  void rejectsAMalformedIndex() {
    const fs::path folder = path("bad_index_json");
    writeShards(folder, 1.0f);
    const fs::path index = folder / "model.safetensors.index.json";
    writeText(index, R"({"weight_map": {"a": )");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), index.string(), "invalid JSON");
  }

  void rejectsAnIndexWithoutWeightMap() {
    const fs::path folder = path("no_weight_map");
    writeShards(folder, 1.0f);
    const fs::path index = folder / "model.safetensors.index.json";
    writeText(index, R"({"metadata": {}})");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), index.string(), "weight_map");
    writeText(index, R"({"weight_map": {"a": 3}})");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), index.string(), "'a'", "string");
    writeText(index, R"({"weight_map": {"a": "../elsewhere.safetensors"}})");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), index.string(), "'a'",
                       "../elsewhere.safetensors");
  }

  void rejectsAMissingShard() {
    const fs::path folder = path("missing_shard");
    writeShards(folder, 1.0f);
    fs::remove(folder / "model-00002-of-00002.safetensors");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), "model.safetensors.index.json",
                       "model-00002-of-00002.safetensors", "'c'", "no such file");
  }

  void rejectsATensorAbsentFromItsShard() {
    const fs::path folder = path("absent_tensor");
    writeShards(folder, 1.0f);
    writeText(folder / "model.safetensors.index.json",
              R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                 "c": "model-00001-of-00002.safetensors"}})");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), "model.safetensors.index.json", "'c'",
                       "model-00001-of-00002.safetensors");
  }

  void rejectsATensorInTwoShards() {
    const fs::path folder = path("two_shards");
    writeShards(folder, 1.0f);
    // Shard 2 also holds "a": the map says shard 1, the header of shard 2 disagrees.
    icet::io::save_safetensors(folder / "model-00002-of-00002.safetensors",
                               {{"a", at::ones({1})}, {"c", at::ones({3})}});
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), "model.safetensors.index.json", "'a'",
                       "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    // The same name twice in the weight_map itself.
    writeShards(folder, 1.0f);
    writeText(folder / "model.safetensors.index.json",
              R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                 "a": "model-00002-of-00002.safetensors"}})");
    EXPECT_INPUT_ERROR(TensorStore::open_dir(folder), "model.safetensors.index.json", "'a'",
                       "weight_map", "twice");
  }

  // ---- load benchmark (small; no timing assertions) ------------------------------------

  void loadBenchmarkOnAGeneratedFile() {
    const auto report = icet::io::run_load_benchmark(std::nullopt, 32ull << 20);
    QVERIFY(report.generated);
    QVERIFY(report.file_bytes >= (32ull << 20));
    QVERIFY(report.tensor_count > 1);
    QVERIFY(report.checksum_ok);
    QVERIFY(report.load_seconds > 0);
    QVERIFY(!fs::exists(report.file));  // the temp folder is removed
    const auto j = icet::io::to_json(report);
    QCOMPARE(j["file_bytes"].get<uint64_t>(), report.file_bytes);
    QVERIFY(j.contains("rss_ratio") && j.contains("gb_per_s"));
    if (report.peak_reset) {
      // Zero-copy: mapping and touching a file costs about its size, not twice that.
      QVERIFY2(report.rss_ratio <= icet::io::kMaxLoadRssRatio, j.dump().c_str());
    }
  }

  void loadBenchmarkOnAGivenFile() {
    const fs::path file = fixture("hf-reference/llava/model.safetensors");
    const auto report = icet::io::run_load_benchmark(file);
    QVERIFY(!report.generated);
    QCOMPARE(report.file_bytes, uint64_t{715520});
    QCOMPARE(report.tensor_count, std::size_t{128});
    QVERIFY(fs::exists(file));
    EXPECT_INPUT_ERROR(icet::io::run_load_benchmark(path("nothing.safetensors")),
                       "nothing.safetensors");
  }
};

QTEST_GUILESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"
