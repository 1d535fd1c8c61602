#include "core/vision/image.h"

#include <spdlog/fmt/fmt.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <new>
#include <streambuf>
#include <string_view>
#include <system_error>

#include "core/base/error.h"
#include "core/base/log.h"

namespace icet::vision {
namespace {

using Bytes = std::span<const uint8_t>;

constexpr std::string_view kSupportedFormats = "PNG, JPEG, WebP, BMP, TIFF, PNM or Sun raster";

// Bounds-checked big/little-endian reads for header parsing. Reading past the end means the
// header itself is cut off.
class HeaderReader {
 public:
  HeaderReader(Bytes bytes, const std::string& source, std::string_view format)
      : bytes_(bytes), source_(source), format_(format) {}

  size_t size() const { return bytes_.size(); }

  void need(uint64_t end) const {
    if (end > bytes_.size()) {
      throw InputError(fmt::format("{}: truncated {} header: it needs at least {} bytes, the data "
                                   "has {}. The file was probably cut off while copying.",
                                   source_, format_, end, bytes_.size()));
    }
  }
  uint32_t u8(uint64_t at) const {
    need(at + 1);
    return bytes_[at];
  }
  uint32_t be16(uint64_t at) const {
    need(at + 2);
    return (uint32_t{bytes_[at]} << 8) | bytes_[at + 1];
  }
  uint32_t le16(uint64_t at) const {
    need(at + 2);
    return uint32_t{bytes_[at]} | (uint32_t{bytes_[at + 1]} << 8);
  }
  uint32_t le24(uint64_t at) const { return le16(at) | (u8(at + 2) << 16); }
  uint32_t be32(uint64_t at) const { return (be16(at) << 16) | be16(at + 2); }
  uint32_t le32(uint64_t at) const { return le16(at) | (le16(at + 2) << 16); }
  uint64_t be64(uint64_t at) const { return (uint64_t{be32(at)} << 32) | be32(at + 4); }
  uint64_t le64(uint64_t at) const { return uint64_t{le32(at)} | (uint64_t{le32(at + 4)} << 32); }
  bool matches(uint64_t at, std::string_view text) const {
    return at + text.size() <= bytes_.size() &&
           std::memcmp(bytes_.data() + at, text.data(), text.size()) == 0;
  }

  [[noreturn]] void cut_off(const std::string& where) const {
    throw InputError(fmt::format("{}: truncated {} data: it ends {}. The file was probably cut off "
                                 "while copying.",
                                 source_, format_, where));
  }
  [[noreturn]] void corrupt(const std::string& what) const {
    throw InputError(fmt::format("{}: corrupt {} file: {}", source_, format_, what));
  }

 private:
  Bytes bytes_;
  const std::string& source_;
  std::string_view format_;
};

bool starts_with(Bytes b, std::string_view magic) {
  return b.size() >= magic.size() && std::memcmp(b.data(), magic.data(), magic.size()) == 0;
}

ImageHeader png_header(const HeaderReader& r) {
  // Signature (8), then the IHDR chunk: length 13, "IHDR", width, height (big-endian).
  r.need(8 + 8 + 13 + 4);
  if (r.be32(8) != 13 || !r.matches(12, "IHDR")) {
    r.corrupt("the first chunk is not a 13-byte IHDR");
  }
  const int64_t width = r.be32(16);
  const int64_t height = r.be32(20);
  if (width == 0 || height == 0 || width > INT32_MAX || height > INT32_MAX) {
    r.corrupt(fmt::format("IHDR says {}x{} pixels", width, height));
  }
  return {"PNG", width, height};
}

bool is_jpeg_sof(uint32_t marker) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

bool is_jpeg_standalone(uint32_t marker) {
  return (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01;  // RSTn, TEM
}

struct JpegWalk {
  int64_t width = 0;
  int64_t height = 0;
};

// Walks the marker segments of a JPEG up to the frame header (SOF). With `to_end` it goes on,
// skipping the entropy-coded data of every scan, and requires the end-of-image marker: libjpeg
// decodes a cut-off file without an error (it fills the missing rows with gray), so truncation
// has to be found here.
JpegWalk walk_jpeg(Bytes b, const HeaderReader& r, bool to_end) {
  JpegWalk walk;
  const auto where = [&] {
    return walk.width == 0 ? std::string("before the frame header (SOF)")
                           : std::string("before the end-of-image marker");
  };
  uint64_t pos = 2;  // after SOI
  for (;;) {
    if (pos + 2 > b.size()) {
      r.cut_off(where());
    }
    if (b[pos] != 0xFF) {
      r.corrupt(fmt::format("expected a marker at byte {}, found 0x{:02x}", pos, b[pos]));
    }
    while (pos + 2 < b.size() && b[pos + 1] == 0xFF) {
      ++pos;  // fill bytes before a marker
    }
    const uint32_t marker = b[pos + 1];
    if (marker == 0xFF) {
      r.cut_off(where());  // only fill bytes left
    }
    pos += 2;
    if (is_jpeg_standalone(marker)) {
      continue;
    }
    if (marker == 0xD9) {  // EOI
      if (walk.width == 0) {
        r.corrupt("no frame header (SOF) before the end-of-image marker");
      }
      return walk;
    }
    if (marker == 0x00 || marker == 0xD8) {
      r.corrupt(fmt::format("unexpected marker 0xff{:02x} at byte {}", marker, pos - 2));
    }
    if (pos + 2 > b.size()) {
      r.cut_off(where());
    }
    const uint32_t length = r.be16(pos);
    if (length < 2) {
      r.corrupt(fmt::format("segment 0xff{:02x} at byte {} has length {}", marker, pos - 2, length));
    }
    if (is_jpeg_sof(marker) && walk.width == 0) {
      if (pos + 7 > b.size()) {
        r.cut_off(where());
      }
      walk.height = r.be16(pos + 3);
      walk.width = r.be16(pos + 5);
      if (walk.height == 0) {
        r.corrupt("the frame header gives height 0 (a DNL marker), which libjpeg cannot decode");
      }
      if (walk.width == 0) {
        r.corrupt("the frame header gives width 0");
      }
      if (!to_end) {
        return walk;
      }
    }
    if (marker == 0xDA && walk.width == 0) {
      r.corrupt("scan data before the frame header (SOF)");
    }
    pos += length;
    if (marker != 0xDA) {
      continue;
    }
    // Entropy-coded data: 0xFF is followed by 0x00 (stuffing), RSTn, more 0xFF (fill), or the
    // next marker.
    for (;;) {
      const void* ff = pos < b.size() ? std::memchr(b.data() + pos, 0xFF, b.size() - pos) : nullptr;
      if (ff == nullptr) {
        r.cut_off(where());
      }
      pos = static_cast<uint64_t>(static_cast<const uint8_t*>(ff) - b.data());
      if (pos + 1 >= b.size()) {
        r.cut_off(where());
      }
      const uint32_t next = b[pos + 1];
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos += 2;
      } else if (next == 0xFF) {
        pos += 1;
      } else {
        break;
      }
    }
  }
}

ImageHeader jpeg_header(Bytes b, const HeaderReader& r) {
  const JpegWalk walk = walk_jpeg(b, r, false);
  return {"JPEG", walk.width, walk.height};
}

ImageHeader bmp_header(const HeaderReader& r) {
  const uint32_t dib_size = r.le32(14);
  int64_t width = 0;
  int64_t height = 0;
  if (dib_size == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
    width = r.le16(18);
    height = r.le16(20);
  } else if (dib_size >= 16) {
    width = static_cast<int32_t>(r.le32(18));
    height = static_cast<int32_t>(r.le32(22));
    height = std::abs(height);  // negative height = rows stored top-down
  } else {
    r.corrupt(fmt::format("DIB header size {}", dib_size));
  }
  if (width <= 0 || height <= 0) {
    r.corrupt(fmt::format("header says {}x{} pixels", width, height));
  }
  return {"BMP", width, height};
}

ImageHeader gif_header(const HeaderReader& r) {
  const int64_t width = r.le16(6);
  const int64_t height = r.le16(8);
  if (width == 0 || height == 0) {
    r.corrupt(fmt::format("logical screen of {}x{} pixels", width, height));
  }
  return {"GIF", width, height};
}

ImageHeader webp_header(const HeaderReader& r) {
  // RIFF container: "RIFF" size "WEBP", then the first chunk's fourcc and size at 12 and 16.
  int64_t width = 0;
  int64_t height = 0;
  if (r.matches(12, "VP8 ")) {  // lossy: frame tag (3), start code 9d 01 2a, 14-bit sizes
    r.need(30);
    if (r.u8(23) != 0x9d || r.u8(24) != 0x01 || r.u8(25) != 0x2a) {
      r.corrupt("VP8 start code missing");
    }
    width = r.le16(26) & 0x3fff;
    height = r.le16(28) & 0x3fff;
  } else if (r.matches(12, "VP8L")) {  // lossless: 0x2f, then 14-bit width-1 and height-1
    if (r.u8(20) != 0x2f) {
      r.corrupt("VP8L signature missing");
    }
    const uint32_t bits = r.le32(21);
    width = (bits & 0x3fff) + 1;
    height = ((bits >> 14) & 0x3fff) + 1;
  } else if (r.matches(12, "VP8X")) {  // extended: flags (4), 24-bit canvas width-1, height-1
    width = int64_t{r.le24(24)} + 1;
    height = int64_t{r.le24(27)} + 1;
  } else {
    r.need(16);
    r.corrupt("unknown first chunk (expected VP8, VP8L or VP8X)");
  }
  if (width == 0 || height == 0) {
    r.corrupt(fmt::format("header says {}x{} pixels", width, height));
  }
  return {"WebP", width, height};
}

ImageHeader tiff_header(const HeaderReader& r) {
  // Only the first image file directory counts: it is the page OpenCV decodes.
  const bool little = r.u8(0) == 'I';
  const auto u16 = [&](uint64_t at) { return little ? r.le16(at) : r.be16(at); };
  const auto u32 = [&](uint64_t at) { return little ? r.le32(at) : r.be32(at); };
  const auto u64 = [&](uint64_t at) { return little ? r.le64(at) : r.be64(at); };
  const bool big_tiff = u16(2) == 43;
  uint64_t ifd = 0;
  uint64_t count = 0;
  uint64_t entry_size = 0;
  uint64_t value_at = 0;  // offset of the value inside an entry
  if (big_tiff) {
    if (u16(4) != 8) {
      r.corrupt("BigTIFF offset size is not 8");
    }
    ifd = u64(8);
    count = u64(ifd);
    ifd += 8;
    entry_size = 20;
    value_at = 12;
  } else {
    ifd = u32(4);
    count = u16(ifd);
    ifd += 2;
    entry_size = 12;
    value_at = 8;
  }
  if (ifd > r.size() || count > (r.size() - ifd) / entry_size) {
    r.cut_off(fmt::format("before the end of the first directory ({} entries at byte {})", count,
                          ifd));
  }
  int64_t width = -1;
  int64_t height = -1;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t e = ifd + i * entry_size;
    const uint32_t tag = u16(e);
    if (tag != 256 && tag != 257) {  // ImageWidth, ImageLength
      continue;
    }
    const uint32_t type = u16(e + 2);
    int64_t value = -1;
    if (type == 3) {  // SHORT
      value = u16(e + value_at);
    } else if (type == 4) {  // LONG
      value = u32(e + value_at);
    } else if (type == 16 && big_tiff) {  // LONG8
      const uint64_t v = u64(e + value_at);
      value = v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
    } else {
      r.corrupt(fmt::format("tag {} has type {}", tag, type));
    }
    (tag == 256 ? width : height) = value;
  }
  if (width <= 0 || height <= 0) {
    r.corrupt(fmt::format("the first directory gives {}x{} pixels (ImageWidth/ImageLength)",
                          width, height));
  }
  return {"TIFF", width, height};
}

ImageHeader pnm_header(Bytes b, const HeaderReader& r) {
  // "P1".."P6": whitespace-separated width and height, '#' comments; "P7" (PAM): keyword lines
  // "WIDTH n", "HEIGHT n" up to "ENDHDR". Headers are short; 4 KiB bounds the scan.
  const uint64_t end = std::min<uint64_t>(b.size(), 4096);
  uint64_t pos = 2;
  const auto token = [&]() -> std::string {
    for (;;) {
      while (pos < end && std::isspace(b[pos])) {
        ++pos;
      }
      if (pos < end && b[pos] == '#') {
        while (pos < end && b[pos] != '\n' && b[pos] != '\r') {
          ++pos;
        }
        continue;
      }
      break;
    }
    std::string t;
    while (pos < end && !std::isspace(b[pos]) && b[pos] != '#' && t.size() < 32) {
      t.push_back(static_cast<char>(b[pos++]));
    }
    if (t.empty()) {
      if (end == b.size()) {
        r.cut_off("inside the header");
      }
      r.corrupt("the header does not give the image size within its first 4096 bytes");
    }
    return t;
  };
  const auto number = [&](const std::string& t) -> int64_t {
    if (t.empty() || t.size() > 18 || t.find_first_not_of("0123456789") != std::string::npos) {
      r.corrupt(fmt::format("expected a size, found \"{}\"", t));
    }
    return std::stoll(t);
  };
  int64_t width = 0;
  int64_t height = 0;
  if (b[1] == '7') {
    for (std::string t = token(); t != "ENDHDR"; t = token()) {
      if (t == "WIDTH") {
        width = number(token());
      } else if (t == "HEIGHT") {
        height = number(token());
      }
    }
  } else {
    width = number(token());
    height = number(token());
  }
  if (width == 0 || height == 0) {
    r.corrupt(fmt::format("header says {}x{} pixels", width, height));
  }
  return {"PNM", width, height};
}

ImageHeader sun_raster_header(const HeaderReader& r) {
  const int64_t width = r.be32(4);
  const int64_t height = r.be32(8);
  if (width == 0 || height == 0) {
    r.corrupt(fmt::format("header says {}x{} pixels", width, height));
  }
  return {"Sun raster", width, height};
}

// Names a few formats people try that OpenCV cannot (or must not) be given.
std::string unsupported_hint(Bytes b) {
  const HeaderReader probe(b, "", "");
  if (probe.matches(4, "ftypheic") || probe.matches(4, "ftypheix") ||
      probe.matches(4, "ftypmif1") || probe.matches(4, "ftypavif")) {
    return "This looks like a HEIC/AVIF photo: export it as JPEG or PNG first.";
  }
  if (starts_with(b, "%PDF")) {
    return "This is a PDF document, not an image.";
  }
  if (starts_with(b, std::string_view("\x00\x00\x00\x0cjP  ", 8)) ||
      starts_with(b, "\xff\x4f\xff\x51")) {
    return "JPEG 2000 is not supported: convert the image to PNG or JPEG.";
  }
  if (starts_with(b, "\x76\x2f\x31\x01")) {
    return "OpenEXR is not supported: convert the image to an 8-bit PNG.";
  }
  if (!b.empty() && (b[0] == '<' || b[0] == '{')) {
    return "The file holds text (HTML, SVG, XML or JSON?), not a raster image.";
  }
  return "Convert the image to PNG or JPEG.";
}

std::string first_bytes_hex(Bytes b) {
  std::string out;
  for (size_t i = 0; i < std::min<size_t>(b.size(), 8); ++i) {
    out += fmt::format("{}{:02x}", i ? " " : "", b[i]);
  }
  return out;
}

// PNG's CRC-32 (ISO 3309, reflected, polynomial 0xedb88320).
uint32_t crc32(Bytes data, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) {
        c = (c & 1U) ? 0xedb88320U ^ (c >> 1) : c >> 1;
      }
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (const uint8_t byte : data) {
    crc = table[(crc ^ byte) & 0xffU] ^ (crc >> 8);
  }
  return ~crc;
}

// Walks every PNG chunk to IEND and checks the CRC of the critical ones. libpng reports these
// faults on stderr and fails half-way; here they become a clear message before decoding.
// Ancillary chunks with a bad CRC are left to libpng, which skips them as PIL does.
void verify_png(Bytes b, const HeaderReader& r) {
  uint64_t pos = 8;
  bool seen_idat = false;
  for (;;) {
    if (pos + 12 > b.size()) {
      r.cut_off(fmt::format("at byte {}, before the IEND chunk", b.size()));
    }
    const uint64_t length = r.be32(pos);
    const std::string type(reinterpret_cast<const char*>(b.data() + pos + 4), 4);
    if (length > 0x7fffffffU || pos + 12 + length > b.size()) {
      r.cut_off(fmt::format("at byte {}, inside chunk '{}' that starts at byte {} and needs {} "
                            "bytes",
                            b.size(), type, pos, length + 12));
    }
    const bool critical = type == "IHDR" || type == "PLTE" || type == "IDAT" || type == "IEND";
    if (critical) {
      const uint32_t stored = r.be32(pos + 8 + length);
      const uint32_t actual = crc32(b.subspan(pos + 4, length + 4));
      if (stored != actual) {
        r.corrupt(fmt::format("checksum of chunk '{}' at byte {} does not match (stored {:08x}, "
                              "computed {:08x})",
                              type, pos, stored, actual));
      }
    }
    seen_idat = seen_idat || type == "IDAT";
    if (type == "IEND") {
      if (!seen_idat) {
        r.corrupt("no IDAT chunk (no pixel data)");
      }
      return;
    }
    pos += 12 + length;
  }
}

void verify_bmp(Bytes b, const HeaderReader& r, const ImageHeader& h) {
  if (r.le32(14) < 40) {
    return;
  }
  const uint32_t bits = r.le16(28);
  const uint32_t compression = r.le32(30);
  if (compression != 0 && compression != 3) {  // RLE data has no fixed size
    return;
  }
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32) {
    r.corrupt(fmt::format("{} bits per pixel", bits));
  }
  // Width and height passed the limits, so this cannot overflow.
  const uint64_t stride = ((static_cast<uint64_t>(h.width) * bits + 31) / 32) * 4;
  const uint64_t needed = uint64_t{r.le32(10)} + stride * static_cast<uint64_t>(h.height);
  if (needed > b.size()) {
    r.cut_off(fmt::format("at byte {}, but the pixel data needs {} bytes", b.size(), needed));
  }
}

void verify_webp(Bytes b, const HeaderReader& r) {
  const uint64_t riff_end = uint64_t{r.le32(4)} + 8;
  if (riff_end > b.size()) {
    r.cut_off(fmt::format("at byte {}, but the RIFF container needs {} bytes", b.size(),
                          riff_end));
  }
}

// Structural checks that catch truncation before OpenCV sees the data (it would print to
// stderr, and for JPEG silently return gray rows).
void verify_structure(Bytes b, const ImageHeader& h, const std::string& source) {
  const HeaderReader r(b, source, h.format);
  if (h.format == "PNG") {
    verify_png(b, r);
  } else if (h.format == "JPEG") {
    walk_jpeg(b, r, true);
  } else if (h.format == "BMP") {
    verify_bmp(b, r, h);
  } else if (h.format == "WebP") {
    verify_webp(b, r);
  }
}

// OpenCV 4.6 reports decoder failures on std::cerr ("imdecode_(''): can't read data: ...") as
// well as by returning an empty Mat. decode_image turns the failure into an InputError, so while
// a decode runs std::cerr goes to the vision log at debug level instead of the console. The
// buffer has no put area: every write goes through its mutex, so concurrent decodes are safe.
// Nothing else in the project writes to std::cerr (logging uses spdlog's own sinks).
class CerrToLog final : public std::streambuf {
 public:
  void flush_line() {
    std::lock_guard lock(mutex_);
    flush_locked();
  }

 protected:
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) {
      return traits_type::not_eof(ch);
    }
    const char c = traits_type::to_char_type(ch);
    xsputn(&c, 1);
    return ch;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::lock_guard lock(mutex_);
    for (std::streamsize i = 0; i < n; ++i) {
      if (s[i] == '\n') {
        flush_locked();
      } else if (line_.size() < 4096) {
        line_.push_back(s[i]);
      }
    }
    return n;
  }

 private:
  void flush_locked() {
    if (!line_.empty()) {
      icet::log::get("vision")->debug("opencv: {}", line_);
      line_.clear();
    }
  }
  std::mutex mutex_;
  std::string line_;
};

class CerrRedirect {
 public:
  CerrRedirect() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (s.depth++ == 0) {
      s.saved = std::cerr.rdbuf(&s.sink);
    }
  }
  ~CerrRedirect() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (--s.depth == 0) {
      std::cerr.rdbuf(s.saved);
      s.sink.flush_line();
    }
  }
  CerrRedirect(const CerrRedirect&) = delete;
  CerrRedirect& operator=(const CerrRedirect&) = delete;

 private:
  struct State {
    std::mutex mutex;
    int depth = 0;
    std::streambuf* saved = nullptr;
    CerrToLog sink;
  };
  static State& state() {
    static State s;
    return s;
  }
};

std::string depth_name(int depth) {
  switch (depth) {
    case CV_8S: return "8-bit signed";
    case CV_16S: return "16-bit signed";
    case CV_32S: return "32-bit integer";
    case CV_32F: return "32-bit float";
    case CV_64F: return "64-bit float";
    default: return fmt::format("OpenCV depth {}", depth);
  }
}

// The one place decoded pixels become RGB8:
//   gray (1 channel) and gray+alpha (2)  -> R = G = B = gray
//   BGR (3) and BGRA (4), OpenCV's order -> RGB; alpha is dropped, not composited, as PIL's
//                                           convert("RGB") does
//   16-bit samples                       -> value >> 8, the high byte, which is what PIL keeps
//                                           when it opens a 16-bit RGB(A) PNG
template <typename T>
void convert_rows(const cv::Mat& mat, const std::array<int, 3>& from, int shift, Image& out) {
  const int channels = mat.channels();
  uint8_t* dst = out.rgb.data();
  for (int y = 0; y < mat.rows; ++y) {
    const T* row = mat.ptr<T>(y);
    for (int x = 0; x < mat.cols; ++x, dst += 3) {
      const T* px = row + static_cast<ptrdiff_t>(x) * channels;
      dst[0] = static_cast<uint8_t>(px[from[0]] >> shift);
      dst[1] = static_cast<uint8_t>(px[from[1]] >> shift);
      dst[2] = static_cast<uint8_t>(px[from[2]] >> shift);
    }
  }
}

Image to_rgb8(const cv::Mat& mat, const std::string& source) {
  const int depth = mat.depth();
  if (depth != CV_8U && depth != CV_16U) {
    throw InputError(describe(source, "8-bit or 16-bit unsigned samples", depth_name(depth),
                              "Convert the image to an 8-bit PNG or JPEG"));
  }
  std::array<int, 3> from{};
  switch (mat.channels()) {
    case 1:
    case 2: from = {0, 0, 0}; break;
    case 3:
    case 4: from = {2, 1, 0}; break;
    default:
      throw InputError(describe(source, "1 to 4 channels", std::to_string(mat.channels()),
                                "Convert the image to an RGB PNG or JPEG"));
  }
  Image out;
  out.width = mat.cols;
  out.height = mat.rows;
  out.rgb.resize(static_cast<size_t>(mat.rows) * static_cast<size_t>(mat.cols) * 3);
  if (depth == CV_8U) {
    convert_rows<uint8_t>(mat, from, 0, out);
  } else {
    convert_rows<uint16_t>(mat, from, 8, out);
  }
  return out;
}

cv::Mat to_bgr_mat(const Image& image) {
  if (image.empty() ||
      image.rgb.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
    throw InputError(describe("encode image", "a non-empty RGB image with width*height*3 bytes",
                              fmt::format("{}x{} with {} bytes", image.width, image.height,
                                          image.rgb.size())));
  }
  cv::Mat bgr(image.height, image.width, CV_8UC3);
  const uint8_t* src = image.rgb.data();
  for (int y = 0; y < image.height; ++y) {
    uint8_t* row = bgr.ptr<uint8_t>(y);
    for (int x = 0; x < image.width; ++x, src += 3) {
      row[x * 3 + 0] = src[2];
      row[x * 3 + 1] = src[1];
      row[x * 3 + 2] = src[0];
    }
  }
  return bgr;
}

std::vector<uint8_t> encode(const Image& image, const std::string& ext,
                            const std::vector<int>& params) {
  std::vector<uint8_t> out;
  try {
    if (!cv::imencode(ext, to_bgr_mat(image), out, params)) {
      throw Error("encoding a " + ext + " image failed");
    }
  } catch (const cv::Exception& e) {
    throw Error("encoding a " + ext + " image failed: " + e.err);
  }
  return out;
}

}  // namespace

ImageHeader read_image_header(std::span<const uint8_t> bytes, const std::string& source_name) {
  if (bytes.empty()) {
    throw InputError(source_name + ": the file is empty (0 bytes), not an image");
  }
  const auto reader = [&](std::string_view format) {
    return HeaderReader(bytes, source_name, format);
  };
  if (starts_with(bytes, "\x89PNG\r\n\x1a\n")) {
    return png_header(reader("PNG"));
  }
  if (starts_with(bytes, "\xff\xd8\xff")) {
    return jpeg_header(bytes, reader("JPEG"));
  }
  if (starts_with(bytes, "RIFF") && reader("WebP").matches(8, "WEBP")) {
    return webp_header(reader("WebP"));
  }
  if (starts_with(bytes, "BM")) {
    return bmp_header(reader("BMP"));
  }
  if (starts_with(bytes, "GIF87a") || starts_with(bytes, "GIF89a")) {
    return gif_header(reader("GIF"));
  }
  if (starts_with(bytes, std::string_view("II*\0", 4)) ||
      starts_with(bytes, std::string_view("MM\0*", 4)) ||
      starts_with(bytes, std::string_view("II+\0", 4)) ||
      starts_with(bytes, std::string_view("MM\0+", 4))) {
    return tiff_header(reader("TIFF"));
  }
  if (bytes.size() >= 3 && bytes[0] == 'P' && bytes[1] >= '1' && bytes[1] <= '7' &&
      std::isspace(bytes[2])) {
    return pnm_header(bytes, reader("PNM"));
  }
  if (starts_with(bytes, "\x59\xa6\x6a\x95")) {
    return sun_raster_header(reader("Sun raster"));
  }
  throw InputError(describe(source_name, fmt::format("an image file ({})", kSupportedFormats),
                            fmt::format("{} bytes starting with {}", bytes.size(),
                                        first_bytes_hex(bytes)),
                            unsupported_hint(bytes)));
}

void check_image_limits(const ImageHeader& header, const ImageLimits& limits,
                        const std::string& source_name) {
  const int64_t w = header.width;
  const int64_t h = header.height;
  if (w <= 0 || h <= 0) {
    throw InputError(fmt::format("{}: image of {}x{} pixels has no pixels", source_name, w, h));
  }
  // w * h > max  <=>  w > floor(max / h), without overflowing for 32-bit header sizes.
  if (w > limits.max_pixels / h) {
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(double(limits.max_pixels))));
    const std::string square =
        side * side == limits.max_pixels ? fmt::format(" ({}x{})", side, side) : std::string();
    throw InputError(fmt::format(
        "{}: image of {}x{} pixels exceeds the limit of {:.1f} megapixels{}. Downscale it first.",
        source_name, w, h, static_cast<double>(limits.max_pixels) / 1e6, square));
  }
  if (w > limits.max_side || h > limits.max_side) {
    throw InputError(fmt::format(
        "{}: image of {}x{} pixels exceeds the limit of {} pixels per side. Downscale it first.",
        source_name, w, h, limits.max_side));
  }
}

Image decode_image(std::span<const uint8_t> bytes, const std::string& source_name,
                   const ImageLimits& limits) {
  const ImageHeader header = read_image_header(bytes, source_name);
  check_image_limits(header, limits, source_name);
  verify_structure(bytes, header, source_name);
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    throw InputError(fmt::format("{}: {} bytes of image data exceed the 2 GiB OpenCV can decode",
                                 source_name, bytes.size()));
  }

  cv::Mat decoded;
  try {
    const CerrRedirect quiet;
    // imdecode only reads the buffer; cv::Mat has no const view.
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1,
                         const_cast<uint8_t*>(bytes.data()));
    decoded = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    throw InputError(fmt::format("{}: could not decode the {} data: {}", source_name,
                                 header.format, e.err));
  } catch (const std::bad_alloc&) {
    throw EnvironmentError(fmt::format("{}: not enough memory to decode a {}x{} image",
                                       source_name, header.width, header.height));
  }
  if (decoded.empty()) {
    if (header.format == "GIF") {
      throw InputError(fmt::format(
          "{}: GIF images cannot be decoded by this build (OpenCV {}). Convert it to PNG first.",
          source_name, CV_VERSION));
    }
    throw InputError(fmt::format(
        "{}: could not decode the {} data; the file is corrupt or uses a variant the decoder "
        "does not support. Re-save it as PNG or JPEG.",
        source_name, header.format));
  }
  if (decoded.cols != header.width || decoded.rows != header.height) {
    // The header was checked, but the limits must hold for what was actually decoded.
    icet::log::get("vision")->warn("{}: header says {}x{}, decoder gave {}x{}", source_name,
                                   header.width, header.height, decoded.cols, decoded.rows);
    check_image_limits({header.format, decoded.cols, decoded.rows}, limits, source_name);
  }
  icet::log::get("vision")->debug("{}: {} {}x{}, {} channel(s), depth {}", source_name,
                                  header.format, decoded.cols, decoded.rows, decoded.channels(),
                                  decoded.depth());
  return to_rgb8(decoded, source_name);
}

Image load_image(const std::filesystem::path& file, const ImageLimits& limits) {
  namespace fs = std::filesystem;
  const std::string name = file.string();
  std::error_code ec;
  const fs::file_status status = fs::status(file, ec);
  if (!fs::exists(status)) {
    throw InputError(name + ": no such file. Check the path.");
  }
  if (fs::is_directory(status)) {
    throw InputError(name + ": is a folder, not an image file");
  }
  if (fs::is_regular_file(status)) {
    const uintmax_t size = fs::file_size(file, ec);
    if (!ec && size > static_cast<uintmax_t>(limits.max_file_bytes)) {
      throw InputError(fmt::format(
          "{}: file of {:.1f} MB exceeds the limit of {:.1f} MB for image files. Downscale or "
          "recompress it first.",
          name, static_cast<double>(size) / 1e6, static_cast<double>(limits.max_file_bytes) / 1e6));
    }
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw InputError(fmt::format("{}: cannot open the file for reading ({})", name,
                                 std::generic_category().message(errno)));
  }
  // Read in blocks up to the limit: the file may not be regular (a pipe) or may be growing.
  std::vector<uint8_t> bytes;
  if (fs::is_regular_file(status) && !ec) {
    bytes.reserve(static_cast<size_t>(fs::file_size(file, ec)));
  }
  constexpr size_t kBlock = size_t{1} << 20;
  for (;;) {
    const size_t old_size = bytes.size();
    if (static_cast<int64_t>(old_size) > limits.max_file_bytes) {
      throw InputError(fmt::format("{}: file exceeds the limit of {:.1f} MB for image files", name,
                                   static_cast<double>(limits.max_file_bytes) / 1e6));
    }
    bytes.resize(old_size + kBlock);
    in.read(reinterpret_cast<char*>(bytes.data() + old_size), static_cast<std::streamsize>(kBlock));
    bytes.resize(old_size + static_cast<size_t>(in.gcount()));
    if (!in) {
      break;
    }
  }
  if (in.bad()) {
    throw InputError(name + ": reading the file failed");
  }
  return decode_image(bytes, name, limits);
}

std::vector<uint8_t> encode_png(const Image& image) {
  return encode(image, ".png", {cv::IMWRITE_PNG_COMPRESSION, 6});
}

std::vector<uint8_t> encode_jpeg(const Image& image, int quality) {
  return encode(image, ".jpg", {cv::IMWRITE_JPEG_QUALITY, std::clamp(quality, 0, 100)});
}

}  // namespace icet::vision
