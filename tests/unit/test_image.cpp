#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <array>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/errors.h"
#include "core/base/error.h"
#include "core/vision/image.h"
#include "core/vision/resample.h"

Q_DECLARE_METATYPE(std::vector<uint8_t>)

namespace {

using Bytes = std::vector<uint8_t>;
using icet::vision::Image;

// --- byte builders for hand-made files -------------------------------------------------------

void put_be16(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put_be32(Bytes& b, uint32_t v) {
  put_be16(b, v >> 16);
  put_be16(b, v & 0xffffU);
}
void put_le16(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put_le32(Bytes& b, uint32_t v) {
  put_le16(b, v & 0xffffU);
  put_le16(b, v >> 16);
}
void put_le64(Bytes& b, uint64_t v) {
  put_le32(b, static_cast<uint32_t>(v));
  put_le32(b, static_cast<uint32_t>(v >> 32));
}
void put_text(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

uint32_t crc32(const uint8_t* data, size_t n) {
  uint32_t crc = 0xffffffffU;
  for (size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k) {
      crc = (crc & 1U) ? 0xedb88320U ^ (crc >> 1) : crc >> 1;
    }
  }
  return ~crc;
}

void put_png_chunk(Bytes& b, std::string_view type, const Bytes& data) {
  put_be32(b, static_cast<uint32_t>(data.size()));
  const size_t start = b.size();
  put_text(b, type);
  b.insert(b.end(), data.begin(), data.end());
  put_be32(b, crc32(b.data() + start, b.size() - start));
}

// zlib stream of stored (uncompressed) deflate blocks.
Bytes zlib_stored(const Bytes& raw) {
  Bytes z = {0x78, 0x01};
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(raw.size() - pos, 65535);
    z.push_back(pos + n == raw.size() ? 1 : 0);
    put_le16(z, static_cast<uint32_t>(n));
    put_le16(z, static_cast<uint32_t>(~n & 0xffffU));
    z.insert(z.end(), raw.begin() + static_cast<ptrdiff_t>(pos),
             raw.begin() + static_cast<ptrdiff_t>(pos + n));
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1;
  uint32_t s = 0;
  for (const uint8_t v : raw) {
    a = (a + v) % 65521;
    s = (s + a) % 65521;
  }
  put_be32(z, (s << 16) | a);
  return z;
}

Bytes png_ihdr(uint32_t width, uint32_t height, uint8_t depth, uint8_t color_type) {
  Bytes ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.push_back(depth);
  ihdr.push_back(color_type);
  ihdr.push_back(0);  // deflate
  ihdr.push_back(0);  // adaptive filtering
  ihdr.push_back(0);  // no interlace
  return ihdr;
}

// A PNG of `rows` (each row's raw samples, big-endian for 16 bit), filter type 0 on every row.
Bytes make_png(int width, int height, uint8_t depth, uint8_t color_type,
               const std::vector<Bytes>& rows, const std::vector<std::pair<std::string, Bytes>>&
                                                       extra_chunks = {}) {
  Bytes raw;
  for (const Bytes& row : rows) {
    raw.push_back(0);
    raw.insert(raw.end(), row.begin(), row.end());
  }
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_png_chunk(png, "IHDR", png_ihdr(static_cast<uint32_t>(width),
                                      static_cast<uint32_t>(height), depth, color_type));
  for (const auto& [type, data] : extra_chunks) {
    put_png_chunk(png, type, data);
  }
  put_png_chunk(png, "IDAT", zlib_stored(raw));
  put_png_chunk(png, "IEND", {});
  return png;
}

// 24-bit bottom-up BMP.
Bytes make_bmp(const Image& img) {
  const uint32_t stride = (static_cast<uint32_t>(img.width) * 3 + 3) & ~3U;
  Bytes b;
  put_text(b, "BM");
  put_le32(b, 54 + stride * static_cast<uint32_t>(img.height));
  put_le32(b, 0);
  put_le32(b, 54);
  put_le32(b, 40);
  put_le32(b, static_cast<uint32_t>(img.width));
  put_le32(b, static_cast<uint32_t>(img.height));
  put_le16(b, 1);
  put_le16(b, 24);
  for (int i = 0; i < 6; ++i) {
    put_le32(b, 0);
  }
  for (int y = img.height - 1; y >= 0; --y) {
    for (int x = 0; x < img.width; ++x) {
      b.push_back(img.at(x, y, 2));
      b.push_back(img.at(x, y, 1));
      b.push_back(img.at(x, y, 0));
    }
    b.resize(b.size() + (stride - static_cast<uint32_t>(img.width) * 3), 0);
  }
  return b;
}

// Uncompressed little-endian RGB TIFF, one strip.
Bytes make_tiff(const Image& img) {
  const uint32_t w = static_cast<uint32_t>(img.width);
  const uint32_t h = static_cast<uint32_t>(img.height);
  const uint16_t entries = 9;
  const uint32_t ifd = 8;
  const uint32_t bps_at = ifd + 2 + entries * 12 + 4;
  const uint32_t data_at = bps_at + 6;
  Bytes b;
  put_text(b, std::string_view("II*\0", 4));
  put_le32(b, ifd);
  put_le16(b, entries);
  const auto entry = [&](uint16_t tag, uint16_t type, uint32_t count, uint32_t value) {
    put_le16(b, tag);
    put_le16(b, type);
    put_le32(b, count);
    if (type == 3 && count == 1) {
      put_le16(b, value);
      put_le16(b, 0);
    } else {
      put_le32(b, value);
    }
  };
  entry(256, 4, 1, w);                  // ImageWidth
  entry(257, 4, 1, h);                  // ImageLength
  entry(258, 3, 3, bps_at);             // BitsPerSample 8,8,8
  entry(259, 3, 1, 1);                  // no compression
  entry(262, 3, 1, 2);                  // RGB
  entry(273, 4, 1, data_at);            // StripOffsets
  entry(277, 3, 1, 3);                  // SamplesPerPixel
  entry(278, 4, 1, h);                  // RowsPerStrip
  entry(279, 4, 1, w * h * 3);          // StripByteCounts
  put_le32(b, 0);                       // no next directory
  for (int i = 0; i < 3; ++i) {
    put_le16(b, 8);
  }
  b.insert(b.end(), img.rgb.begin(), img.rgb.end());
  return b;
}

Image pattern(int width, int height, uint32_t seed) {
  std::mt19937 rng(seed);
  Image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<size_t>(width * height * 3));
  for (auto& v : img.rgb) {
    v = static_cast<uint8_t>(rng() & 0xffU);
  }
  return img;
}

void write_file(const std::filesystem::path& p, const Bytes& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string fnv1a64(const Bytes& data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

using icet::test::input_error_of;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::filesystem::path kPil = std::filesystem::path(ICET_FIXTURES) / "pil";

}  // namespace

class TestImage : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  // --- decoding and conversion to RGB8 --------------------------------------------------------

  void rgbPngDecodesExactly() {
    const Image src = pattern(5, 3, 1);
    std::vector<Bytes> rows;
    for (int y = 0; y < 3; ++y) {
      rows.emplace_back(src.rgb.begin() + y * 15, src.rgb.begin() + (y + 1) * 15);
    }
    const Image img = icet::vision::decode_image(make_png(5, 3, 8, 2, rows), "rgb.png");
    QCOMPARE(img.width, 5);
    QCOMPARE(img.height, 3);
    QVERIFY(img.rgb == src.rgb);
  }

  void grayscalePngIsReplicatedToRgb() {
    const Image img =
        icet::vision::decode_image(make_png(3, 1, 8, 0, {{0, 77, 255}}), "gray.png");
    QCOMPARE(img.width, 3);
    QVERIFY((img.rgb == Bytes{0, 0, 0, 77, 77, 77, 255, 255, 255}));
  }

  void grayAlphaPngDropsAlpha() {
    const Image img = icet::vision::decode_image(make_png(2, 1, 8, 4, {{10, 0, 200, 128}}), "ga.png");
    QVERIFY((img.rgb == Bytes{10, 10, 10, 200, 200, 200}));
  }

  void rgbaPngDropsAlphaWithoutCompositing() {
    // PIL's convert("RGB") keeps the colour of fully and partly transparent pixels as is.
    const Image img = icet::vision::decode_image(
        make_png(3, 1, 8, 6, {{10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255}}), "rgba.png");
    QVERIFY((img.rgb == Bytes{10, 20, 30, 40, 50, 60, 70, 80, 90}));
  }

  void sixteenBitPngsKeepTheHighByte() {
    // RGB 16-bit, big-endian samples: 0x12ff -> 0x12, 0xff00 -> 0xff, 0x00ff -> 0x00.
    const Image rgb = icet::vision::decode_image(
        make_png(1, 1, 16, 2, {{0x12, 0xff, 0xff, 0x00, 0x00, 0xff}}), "rgb16.png");
    QVERIFY((rgb.rgb == Bytes{0x12, 0xff, 0x00}));
    const Image gray = icet::vision::decode_image(
        make_png(2, 1, 16, 0, {{0xab, 0xcd, 0x01, 0x80}}), "gray16.png");
    QVERIFY((gray.rgb == Bytes{0xab, 0xab, 0xab, 0x01, 0x01, 0x01}));
    const Image rgba = icet::vision::decode_image(
        make_png(1, 1, 16, 6, {{0x80, 0x01, 0x40, 0xff, 0x20, 0x00, 0x00, 0x00}}), "rgba16.png");
    QVERIFY((rgba.rgb == Bytes{0x80, 0x40, 0x20}));
  }

  void palettePngIsExpanded() {
    const Bytes plte = {255, 0, 0, 0, 128, 255};
    const Bytes trns = {0};  // entry 0 transparent: its colour is kept
    const Image img = icet::vision::decode_image(
        make_png(3, 1, 8, 3, {{1, 0, 1}}, {{"PLTE", plte}, {"tRNS", trns}}), "palette.png");
    QVERIFY((img.rgb == Bytes{0, 128, 255, 255, 0, 0, 0, 128, 255}));
  }

  void bmpAndTiffDecodeExactly() {
    const Image src = pattern(7, 5, 2);  // odd width: BMP rows are padded
    QVERIFY(icet::vision::decode_image(make_bmp(src), "a.bmp").rgb == src.rgb);
    const Image tiff = icet::vision::decode_image(make_tiff(src), "a.tif");
    QCOMPARE(tiff.width, 7);
    QVERIFY(tiff.rgb == src.rgb);
    Bytes ppm;
    put_text(ppm, "P6\n# comment\n7 5\n255\n");
    ppm.insert(ppm.end(), src.rgb.begin(), src.rgb.end());
    QVERIFY(icet::vision::decode_image(ppm, "a.ppm").rgb == src.rgb);
  }

  void pngAndJpegRoundTripThroughFiles() {
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const std::filesystem::path root = dir.path().toStdString();
    const Image src = pattern(33, 17, 3);
    write_file(root / "a.png", icet::vision::encode_png(src));
    const Image png = icet::vision::load_image(root / "a.png");
    QVERIFY(png.rgb == src.rgb);

    Image flat;  // JPEG is lossy: a flat colour comes back within a few levels
    flat.width = 16;
    flat.height = 8;
    flat.rgb.resize(16 * 8 * 3);
    for (size_t i = 0; i < flat.rgb.size(); i += 3) {
      flat.rgb[i] = 200;
      flat.rgb[i + 1] = 100;
      flat.rgb[i + 2] = 30;
    }
    write_file(root / "a.jpg", icet::vision::encode_jpeg(flat, 95));
    const Image jpg = icet::vision::load_image(root / "a.jpg");
    QCOMPARE(jpg.width, 16);
    QCOMPARE(jpg.height, 8);
    for (size_t i = 0; i < jpg.rgb.size(); ++i) {
      QVERIFY2(std::abs(int(jpg.rgb[i]) - int(flat.rgb[i])) <= 3, std::to_string(i).c_str());
    }
  }

  // --- size limits from the header ------------------------------------------------------------

  void hugePngIsRejectedFromItsHeader() {
    // IHDR claims 60000x60000 (valid CRC); there is no pixel data at all, so the refusal can
    // only come from the header.
    Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_png_chunk(png, "IHDR", png_ihdr(60000, 60000, 8, 2));
    put_png_chunk(png, "IEND", {});
    QTemporaryDir dir;
    const auto path = std::filesystem::path(dir.path().toStdString()) / "photo.png";
    write_file(path, png);
    const std::string msg = input_error_of([&] { icet::vision::load_image(path); });
    QCOMPARE(QString::fromStdString(msg),
             QString::fromStdString(path.string() +
                                    ": image of 60000x60000 pixels exceeds the limit of 67.1 "
                                    "megapixels (8192x8192). Downscale it first."));
  }

  void hugeHeaders_data() {
    QTest::addColumn<Bytes>("bytes");
    QTest::addColumn<QString>("format");
    QTest::addColumn<qint64>("width");
    QTest::addColumn<qint64>("height");

    Bytes jpeg = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10};
    put_text(jpeg, std::string_view("JFIF\0\1\1\0\0\1\0\1\0\0", 14));
    jpeg.insert(jpeg.end(), {0xff, 0xff, 0xc2, 0x00, 0x11, 0x08});  // fill byte, progressive SOF
    put_be16(jpeg, 60000);
    put_be16(jpeg, 50000);
    jpeg.insert(jpeg.end(), {3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1});
    QTest::newRow("jpeg") << jpeg << "JPEG" << qint64(50000) << qint64(60000);

    Bytes bmp;
    put_text(bmp, "BM");
    put_le32(bmp, 0);
    put_le32(bmp, 0);
    put_le32(bmp, 54);
    put_le32(bmp, 40);
    put_le32(bmp, 60000);
    put_le32(bmp, static_cast<uint32_t>(-60000));  // top-down
    QTest::newRow("bmp") << bmp << "BMP" << qint64(60000) << qint64(60000);

    Bytes gif;
    put_text(gif, "GIF89a");
    put_le16(gif, 65535);
    put_le16(gif, 2000);
    QTest::newRow("gif") << gif << "GIF" << qint64(65535) << qint64(2000);

    const auto riff = [](std::string_view fourcc, const Bytes& payload) {
      Bytes b;
      put_text(b, "RIFF");
      put_le32(b, static_cast<uint32_t>(12 + payload.size()));
      put_text(b, "WEBP");
      put_text(b, fourcc);
      put_le32(b, static_cast<uint32_t>(payload.size()));
      b.insert(b.end(), payload.begin(), payload.end());
      return b;
    };
    Bytes vp8x = {0, 0, 0, 0};
    for (const uint32_t v : {59999U, 59999U}) {
      vp8x.insert(vp8x.end(), {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16)});
    }
    QTest::newRow("webp-vp8x") << riff("VP8X", vp8x) << "WebP" << qint64(60000) << qint64(60000);
    Bytes vp8l = {0x2f};
    put_le32(vp8l, 16383U | (16383U << 14));
    QTest::newRow("webp-vp8l") << riff("VP8L", vp8l) << "WebP" << qint64(16384) << qint64(16384);
    Bytes vp8 = {0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a};
    put_le16(vp8, 16383);
    put_le16(vp8, 9000);
    QTest::newRow("webp-vp8") << riff("VP8 ", vp8) << "WebP" << qint64(16383) << qint64(9000);

    Bytes tiff_le;
    put_text(tiff_le, std::string_view("II*\0", 4));
    put_le32(tiff_le, 8);
    put_le16(tiff_le, 2);
    for (const uint16_t tag : {uint16_t{256}, uint16_t{257}}) {
      put_le16(tiff_le, tag);
      put_le16(tiff_le, 4);
      put_le32(tiff_le, 1);
      put_le32(tiff_le, 60000);
    }
    put_le32(tiff_le, 0);
    QTest::newRow("tiff-le") << tiff_le << "TIFF" << qint64(60000) << qint64(60000);

    Bytes tiff_be;
    put_text(tiff_be, std::string_view("MM\0*", 4));
    put_be32(tiff_be, 8);
    put_be16(tiff_be, 2);
    put_be16(tiff_be, 257);  // SHORT values sit in the first two bytes of the field
    put_be16(tiff_be, 3);
    put_be32(tiff_be, 1);
    put_be32(tiff_be, 50000U << 16);
    put_be16(tiff_be, 256);
    put_be16(tiff_be, 3);
    put_be32(tiff_be, 1);
    put_be32(tiff_be, 40000U << 16);
    put_be32(tiff_be, 0);
    QTest::newRow("tiff-be") << tiff_be << "TIFF" << qint64(40000) << qint64(50000);

    Bytes big_tiff;
    put_text(big_tiff, std::string_view("II+\0", 4));
    put_le16(big_tiff, 8);
    put_le16(big_tiff, 0);
    put_le64(big_tiff, 16);
    put_le64(big_tiff, 2);
    for (const uint16_t tag : {uint16_t{256}, uint16_t{257}}) {
      put_le16(big_tiff, tag);
      put_le16(big_tiff, 16);  // LONG8
      put_le64(big_tiff, 1);
      put_le64(big_tiff, 100000);
    }
    put_le64(big_tiff, 0);
    QTest::newRow("bigtiff") << big_tiff << "TIFF" << qint64(100000) << qint64(100000);

    Bytes ppm;
    put_text(ppm, "P6\n# made by hand\n60000 60000\n255\n");
    QTest::newRow("ppm") << ppm << "PNM" << qint64(60000) << qint64(60000);
    Bytes pam;
    put_text(pam, "P7\nWIDTH 60000\nHEIGHT 70000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n");
    QTest::newRow("pam") << pam << "PNM" << qint64(60000) << qint64(70000);

    Bytes sun = {0x59, 0xa6, 0x6a, 0x95};
    put_be32(sun, 60000);
    put_be32(sun, 60000);
    put_be32(sun, 24);
    QTest::newRow("sun") << sun << "Sun raster" << qint64(60000) << qint64(60000);
  }

  void hugeHeaders() {
    QFETCH(Bytes, bytes);
    QFETCH(QString, format);
    QFETCH(qint64, width);
    QFETCH(qint64, height);
    const icet::vision::ImageHeader h = icet::vision::read_image_header(bytes, "big");
    QCOMPARE(QString::fromStdString(h.format), format);
    QCOMPARE(h.width, width);
    QCOMPARE(h.height, height);
    const std::string msg = input_error_of([&] { icet::vision::decode_image(bytes, "big"); });
    QVERIFY2(contains(msg, "big: image of " + std::to_string(width) + "x" +
                               std::to_string(height) + " pixels exceeds the limit"),
             msg.c_str());
  }

  void malformedHeaders_data() {
    QTest::addColumn<Bytes>("bytes");
    QTest::addColumn<QString>("expected");
    const auto text = [](std::string_view t) { return Bytes(t.begin(), t.end()); };

    Bytes pam = text("P7\n");
    for (int i = 0; i < 3000; ++i) {
      put_text(pam, "X ");
    }
    QTest::newRow("pam without ENDHDR") << pam << "does not give the image size";
    QTest::newRow("pam cut") << text("P7\nWIDTH 3\n") << "truncated PNM data";
    QTest::newRow("ppm letters") << text("P6\nten 5\n255\n") << "expected a size";

    Bytes tiff;
    put_text(tiff, std::string_view("II*\0", 4));
    put_le32(tiff, 8);
    put_le16(tiff, 65535);
    QTest::newRow("tiff entry count") << tiff << "truncated TIFF data";
    Bytes big_tiff;
    put_text(big_tiff, std::string_view("II+\0", 4));
    put_le16(big_tiff, 8);
    put_le16(big_tiff, 0);
    put_le64(big_tiff, 16);
    put_le64(big_tiff, ~0ULL);
    QTest::newRow("bigtiff entry count") << big_tiff << "truncated TIFF data";
    Bytes tiff_no_size;
    put_text(tiff_no_size, std::string_view("II*\0", 4));
    put_le32(tiff_no_size, 8);
    put_le16(tiff_no_size, 0);
    QTest::newRow("tiff without size") << tiff_no_size << "ImageWidth/ImageLength";

    QTest::newRow("jpeg fill bytes") << Bytes{0xff, 0xd8, 0xff, 0xff, 0xff} << "truncated JPEG";
    QTest::newRow("jpeg without frame")
        << Bytes{0xff, 0xd8, 0xff, 0xd9} << "no frame header (SOF) before the end-of-image";
    QTest::newRow("jpeg zero length") << Bytes{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x01}
                                      << "has length 1";
    QTest::newRow("jpeg dnl") << Bytes{0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0, 0, 0, 8, 1, 1, 0x11, 0}
                              << "height 0";

    Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_png_chunk(png, "IDAT", Bytes(13, 0));
    QTest::newRow("png without IHDR") << png << "the first chunk is not a 13-byte IHDR";
    Bytes png_zero = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_png_chunk(png_zero, "IHDR", png_ihdr(0, 5, 8, 2));
    QTest::newRow("png 0 wide") << png_zero << "IHDR says 0x5 pixels";

    Bytes bmp = text("BM");
    bmp.resize(14, 0);
    put_le32(bmp, 5);
    bmp.resize(40, 0);
    QTest::newRow("bmp dib size") << bmp << "DIB header size 5";

    Bytes webp = text("RIFF");
    put_le32(webp, 20);
    put_text(webp, "WEBPABCD");
    put_le32(webp, 8);
    webp.resize(28, 0);
    QTest::newRow("webp chunk") << webp << "unknown first chunk";

    Bytes gif = text("GIF87a");
    put_le16(gif, 0);
    put_le16(gif, 0);
    QTest::newRow("gif 0x0") << gif << "logical screen of 0x0";
    QTest::newRow("gif cut") << text("GIF89a\x01") << "truncated GIF header";
  }

  void malformedHeaders() {
    QFETCH(Bytes, bytes);
    QFETCH(QString, expected);
    const std::string msg = input_error_of([&] { icet::vision::decode_image(bytes, "bad"); });
    QVERIFY2(contains(msg, "bad: ") && contains(msg, expected.toStdString()), msg.c_str());
  }

  void sideAndCustomLimits() {
    const Bytes wide = make_png(20, 1, 8, 0, {Bytes(20, 7)});
    icet::vision::ImageLimits side;
    side.max_side = 16;
    QCOMPARE(QString::fromStdString(input_error_of([&] { icet::vision::decode_image(wide, "w.png", side); })),
             QStringLiteral("w.png: image of 20x1 pixels exceeds the limit of 16 pixels per side. "
                            "Downscale it first."));
    icet::vision::ImageLimits pixels;
    pixels.max_pixels = 10;
    QVERIFY(contains(input_error_of([&] { icet::vision::decode_image(wide, "w.png", pixels); }),
                     "exceeds the limit of 0.0 megapixels"));
    pixels.max_pixels = 20;
    QCOMPARE(icet::vision::decode_image(wide, "w.png", pixels).width, 20);

    QTemporaryDir dir;
    const auto path = std::filesystem::path(dir.path().toStdString()) / "w.png";
    write_file(path, wide);
    icet::vision::ImageLimits file_bytes;
    file_bytes.max_file_bytes = 10;
    QVERIFY(contains(input_error_of([&] { icet::vision::load_image(path, file_bytes); }),
                     "exceeds the limit of 0.0 MB"));
  }

  // --- files that are not (whole) images ------------------------------------------------------

  void missingEmptyAndFolder() {
    QTemporaryDir dir;
    const std::filesystem::path root = dir.path().toStdString();
    QCOMPARE(QString::fromStdString(input_error_of([&] { icet::vision::load_image(root / "none.png"); })),
             QString::fromStdString((root / "none.png").string() + ": no such file. Check the path."));
    write_file(root / "empty.png", {});
    QCOMPARE(QString::fromStdString(input_error_of([&] { icet::vision::load_image(root / "empty.png"); })),
             QString::fromStdString((root / "empty.png").string() +
                                    ": the file is empty (0 bytes), not an image"));
    QVERIFY(contains(input_error_of([&] { icet::vision::load_image(root); }), "is a folder"));
  }

  void nonImagesNameTheFileAndAHint() {
    Bytes text;
    put_text(text, "<!DOCTYPE html><html>not an image</html>");
    std::string msg = input_error_of([&] { icet::vision::decode_image(text, "page.png"); });
    QVERIFY2(contains(msg, "page.png: expected an image file (PNG, JPEG, WebP, BMP, TIFF, PNM or "
                           "Sun raster), found 40 bytes starting with 3c 21 44 4f"),
             msg.c_str());
    QVERIFY(contains(msg, "holds text"));

    Bytes heic = {0, 0, 0, 0x18};
    put_text(heic, "ftypheic");
    heic.resize(64, 0);
    msg = input_error_of([&] { icet::vision::decode_image(heic, "IMG_0001.HEIC"); });
    QVERIFY2(contains(msg, "IMG_0001.HEIC") && contains(msg, "HEIC/AVIF"), msg.c_str());

    std::mt19937 rng(5);
    Bytes noise(4096);
    for (auto& v : noise) {
      v = static_cast<uint8_t>(rng());
    }
    noise[0] = 0x00;  // not accidentally a signature
    QVERIFY(contains(input_error_of([&] { icet::vision::decode_image(noise, "noise.bin"); }),
                     "noise.bin: expected an image file"));
  }

  void everyTruncationOfAPngIsAnInputError() {
    const Image src = pattern(6, 4, 4);
    const Bytes png = icet::vision::encode_png(src);
    for (size_t n = 1; n < png.size(); ++n) {
      const Bytes cut(png.begin(), png.begin() + static_cast<ptrdiff_t>(n));
      const std::string msg = input_error_of([&] { icet::vision::decode_image(cut, "cut.png"); });
      QVERIFY2(contains(msg, "cut.png: "), (std::to_string(n) + ": " + msg).c_str());
    }
    const std::string msg = input_error_of([&] {
      icet::vision::decode_image(Bytes(png.begin(), png.begin() + static_cast<ptrdiff_t>(png.size() - 20)),
                                 "cut.png");
    });
    QVERIFY2(contains(msg, "truncated PNG data") && contains(msg, "cut off"), msg.c_str());
  }

  void everyTruncationOfAJpegIsAnInputError() {
    // libjpeg itself would return the cut-off image with gray rows.
    const Bytes jpeg = icet::vision::encode_jpeg(pattern(24, 16, 6), 90);
    for (size_t n = 1; n < jpeg.size(); n += (n < 700 ? 1 : 7)) {
      const Bytes cut(jpeg.begin(), jpeg.begin() + static_cast<ptrdiff_t>(n));
      const std::string msg = input_error_of([&] { icet::vision::decode_image(cut, "cut.jpg"); });
      QVERIFY2(contains(msg, "cut.jpg: "), (std::to_string(n) + ": " + msg).c_str());
    }
    const Bytes half(jpeg.begin(), jpeg.begin() + static_cast<ptrdiff_t>(jpeg.size() / 2));
    const std::string msg = input_error_of([&] { icet::vision::decode_image(half, "cut.jpg"); });
    QVERIFY2(contains(msg, "truncated JPEG data: it ends before the end-of-image marker"),
             msg.c_str());
    // Trailing bytes after the end-of-image marker are harmless.
    Bytes trailing = jpeg;
    put_text(trailing, "trailing metadata");
    QCOMPARE(icet::vision::decode_image(trailing, "t.jpg").width, 24);
  }

  void corruptPngsAreInputErrors() {
    const Bytes png = make_png(4, 2, 8, 2, {Bytes(12, 50), Bytes(12, 90)});
    Bytes bad_crc = png;
    bad_crc[bad_crc.size() - 20] ^= 0x01;  // inside IDAT
    std::string msg = input_error_of([&] { icet::vision::decode_image(bad_crc, "crc.png"); });
    QVERIFY2(contains(msg, "crc.png: corrupt PNG file: checksum of chunk 'IDAT'"), msg.c_str());

    // Valid chunk checksums around a broken zlib stream: only libpng can notice.
    Bytes bad_zlib = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_png_chunk(bad_zlib, "IHDR", png_ihdr(4, 2, 8, 2));
    put_png_chunk(bad_zlib, "IDAT", Bytes{0x78, 0x01, 0xff, 0xff, 0xff, 0x12, 0x34});
    put_png_chunk(bad_zlib, "IEND", {});
    msg = input_error_of([&] { icet::vision::decode_image(bad_zlib, "zlib.png"); });
    QVERIFY2(contains(msg, "zlib.png: could not decode the PNG data"), msg.c_str());
  }

  void randomByteFlipsNeverCrash() {
    // Decoding must either succeed or throw icet::Error, whatever the bytes.
    const Image src = pattern(12, 9, 7);
    const std::vector<std::pair<std::string, Bytes>> files = {
        {"f.png", icet::vision::encode_png(src)},
        {"f.jpg", icet::vision::encode_jpeg(src, 80)},
        {"f.bmp", make_bmp(src)},
        {"f.tif", make_tiff(src)},
    };
    std::mt19937 rng(11);
    int decoded = 0;
    int refused = 0;
    for (const auto& [name, original] : files) {
      for (int trial = 0; trial < 150; ++trial) {
        Bytes b = original;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < flips; ++i) {
          b[rng() % b.size()] ^= static_cast<uint8_t>(1U << (rng() % 8));
        }
        try {
          const Image img = icet::vision::decode_image(b, name);
          QVERIFY(img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3);
          ++decoded;
        } catch (const icet::Error&) {
          ++refused;
        }
      }
    }
    QCOMPARE(decoded + refused, 600);
  }

  void gifIsDecodedOrClearlyRefused() {
    // 1x1 GIF89a, one red pixel. OpenCV 4.6 has no GIF decoder; later versions do.
    const Bytes gif = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 255, 0, 0, 0, 0, 0,
                       0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    try {
      const Image img = icet::vision::decode_image(gif, "one.gif");
      QCOMPARE(img.width, 1);
      QVERIFY((img.rgb == Bytes{255, 0, 0}));
    } catch (const icet::InputError& e) {
      QVERIFY2(contains(e.what(), "one.gif: GIF images cannot be decoded"), e.what());
    }
  }

  // --- PIL-exact resize ------------------------------------------------------------------------

  void resizeMatchesPilBitForBit() {
    // tests/fixtures/pil/cases.json: Pillow 9.4's Image.resize output hash for every source,
    // size and filter (see generate.py there).
    std::ifstream in(kPil / "cases.json");
    QVERIFY(in.good());
    const nlohmann::json manifest = nlohmann::json::parse(in);
    std::map<std::string, Image> sources;
    int exact = 0;
    int total = 0;
    std::vector<std::string> failures;
    for (const auto& c : manifest.at("cases")) {
      const std::string source = c.at("source");
      if (!sources.count(source)) {
        sources[source] = icet::vision::load_image(kPil / source);
      }
      const int w = c.at("width");
      const int h = c.at("height");
      const auto filter = static_cast<icet::vision::Resample>(c.at("resample").get<int>());
      const Image out = icet::vision::resize(sources[source], w, h, filter);
      ++total;
      if (out.width == w && out.height == h && fnv1a64(out.rgb) == c.at("fnv1a64")) {
        ++exact;
      } else if (failures.size() < 10) {
        failures.push_back(source + " -> " + std::to_string(w) + "x" + std::to_string(h) + " " +
                           icet::vision::resample_name(filter));
      }
    }
    qInfo("PIL resize: %d of %d cases bit-exact", exact, total);
    std::string list;
    for (const auto& f : failures) {
      list += "\n  " + f;
    }
    QVERIFY2(exact == total, list.c_str());
    QCOMPARE(total, 540);
  }

  void resizeMatchesPilFullOutputs_data() {
    QTest::addColumn<int>("width");
    QTest::addColumn<int>("height");
    QTest::addColumn<int>("resample");
    QTest::newRow("bicubic down") << 18 << 14 << 3;
    QTest::newRow("bicubic up") << 74 << 58 << 3;
    QTest::newRow("bilinear down") << 19 << 15 << 2;
    QTest::newRow("bilinear mixed") << 53 << 17 << 2;
  }

  void resizeMatchesPilFullOutputs() {
    QFETCH(int, width);
    QFETCH(int, height);
    QFETCH(int, resample);
    const Image src = icet::vision::load_image(kPil / "noise_37x29.png");
    const Image expected = icet::vision::load_image(
        kPil / ("expected_noise_37x29_" + std::to_string(width) + "x" + std::to_string(height) +
                "_r" + std::to_string(resample) + ".png"));
    const Image out =
        icet::vision::resize(src, width, height, static_cast<icet::vision::Resample>(resample));
    QCOMPARE(out.width, expected.width);
    QCOMPARE(out.height, expected.height);
    for (size_t i = 0; i < out.rgb.size(); ++i) {
      if (out.rgb[i] != expected.rgb[i]) {
        const size_t px = i / 3;
        QFAIL(qPrintable(QStringLiteral("first difference at x=%1 y=%2 channel %3: %4, PIL %5")
                             .arg(px % static_cast<size_t>(width))
                             .arg(px / static_cast<size_t>(width))
                             .arg(i % 3)
                             .arg(out.rgb[i])
                             .arg(expected.rgb[i])));
      }
    }
  }

  void resizeToTheSameSizeIsACopyAndBadSizesThrow() {
    const Image src = pattern(5, 4, 9);
    QVERIFY(icet::vision::resize(src, 5, 4, icet::vision::Resample::Bicubic).rgb == src.rgb);
    QVERIFY(!input_error_of([&] { icet::vision::resize(src, 0, 4, icet::vision::Resample::Bicubic); }).empty());
    QVERIFY(!input_error_of([&] { icet::vision::resize(Image{}, 3, 3, icet::vision::Resample::Bilinear); }).empty());
  }

  // --- crop and pad ----------------------------------------------------------------------------

  void centerCropFollowsHuggingFace() {
    Image src = pattern(5, 7, 10);
    // 5x7 -> 2x2: top = (7-2)//2 = 2, left = (5-2)//2 = 1.
    Image out = icet::vision::center_crop(src, 2, 2);
    QCOMPARE(out.at(0, 0, 0), src.at(1, 2, 0));
    QCOMPARE(out.at(1, 1, 2), src.at(2, 3, 2));

    // Larger than the image on both axes: placed ceil(pad/2) from the top-left, zeros around.
    src = pattern(3, 2, 11);
    out = icet::vision::center_crop(src, 6, 5);
    QCOMPARE(out.width, 6);
    QCOMPARE(out.height, 5);
    QCOMPARE(out.at(2, 2, 1), src.at(0, 0, 1));  // ceil(3/2) = 2, ceil(3/2) = 2
    QCOMPARE(out.at(4, 3, 0), src.at(2, 1, 0));
    QCOMPARE(out.at(1, 2, 0), uint8_t{0});
    QCOMPARE(out.at(5, 4, 2), uint8_t{0});

    // Wider crop than the image, shorter than it: left = (4-6)//2 = -1 (floor), pad 1 left;
    // top = (10-4)//2 = 3.
    src = pattern(4, 10, 12);
    out = icet::vision::center_crop(src, 6, 4);
    QCOMPARE(out.at(0, 0, 0), uint8_t{0});
    QCOMPARE(out.at(1, 0, 0), src.at(0, 3, 0));
    QCOMPARE(out.at(4, 3, 2), src.at(3, 6, 2));
    QCOMPARE(out.at(5, 3, 2), uint8_t{0});
  }

  void cropAndPadCheckBounds() {
    const Image src = pattern(4, 3, 13);
    const Image padded = icet::vision::pad(src, 6, 5, 1, 2);
    QCOMPARE(padded.at(1, 2, 0), src.at(0, 0, 0));
    QCOMPARE(padded.at(0, 0, 0), uint8_t{0});
    QVERIFY(icet::vision::crop(padded, 1, 2, 4, 3).rgb == src.rgb);
    QVERIFY(!input_error_of([&] { icet::vision::crop(src, 1, 0, 4, 3); }).empty());
    QVERIFY(!input_error_of([&] { icet::vision::pad(src, 4, 3, 1, 0); }).empty());
  }
};

QTEST_GUILESS_MAIN(TestImage)
#include "test_image.moc"
