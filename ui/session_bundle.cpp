#include "ui/session_bundle.h"

#include <QDir>
#include <QFileInfo>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"

namespace icet::ui {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& where, const std::string& key, const std::string& expected,
                       const json& found) {
  throw InputError(describe(where + ": key '" + key + "'", expected, json_util::type_name(found)));
}

// A string at `key` of `object` (absent or null -> `fallback`).
QString text(const json& object, const char* key, const std::string& where, const std::string& prefix = {}) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) fail(where, prefix + key, "a string", *it);
  return QString::fromStdString(it->get<std::string>());
}

int small_int(const json& value, const std::string& where, const std::string& key) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > 4096) {
    fail(where, key, "an integer from 0 to 4096", value);
  }
  return static_cast<int>(value.get<int64_t>());
}

}  // namespace

SessionBundle parse_session_bundle(const QByteArray& bytes, const QString& file) {
  const std::string where = file.toStdString();
  const json j = json_util::parse(std::string_view(bytes.constData(), static_cast<size_t>(bytes.size())), where);
  if (!j.is_object() || j.value("format", json()) != "icet-session") {
    throw InputError(describe(where, "an ICET Studio session (format: \"icet-session\")",
                              j.is_object() ? "format " + j.value("format", json()).dump() : json_util::type_name(j)));
  }
  const json version = j.value("version", json(1));
  if (!version.is_number_integer() || version.get<int64_t>() < 1 || version.get<int64_t>() > 2) {
    throw InputError(describe(where + ": key 'version'", "1 or 2 (this version of ICET Studio)", version.dump()));
  }
  SessionBundle b;
  b.file = file;
  const auto model = j.find("model");
  if (model == j.end() || !model->is_object()) {
    fail(where, "model", "an object", model == j.end() ? json() : *model);
  }
  b.modelPath = text(*model, "path", where, "model.");
  b.currentAdapter = text(*model, "adapter", where, "model.");
  b.judgePath = text(j, "judge", where);
  b.rewardPath = text(j, "reward_model", where);
  b.prompt = text(j, "prompt", where);
  if (const auto s = j.find("sampling"); s != j.end() && !s->is_null()) {
    if (!s->is_object()) fail(where, "sampling", "an object", *s);
    b.sampling = generate::sampling_from_json(*s, where + ": sampling");
  }
  if (const auto image = j.find("image"); image != j.end() && !image->is_null()) {
    if (!image->is_object()) fail(where, "image", "an object", *image);
    b.imageFile = text(*image, "file", where, "image.");
    b.imageSource = text(*image, "source", where, "image.");
    // A bundle names its own image ("image.png"); a path out of its folder (absolute, "..") could
    // make opening a shared bundle read any file on the machine.
    const QString clean = QDir::cleanPath(b.imageFile);
    if (b.imageFile.isEmpty() || QDir::isAbsolutePath(b.imageFile) || clean.startsWith(QStringLiteral("..")) ||
        clean.startsWith(QLatin1Char('/'))) {
      throw InputError(describe(where + ": key 'image.file'", "the name of an image file inside the session folder",
                                "\"" + b.imageFile.toStdString() + "\""));
    }
  }
  const auto panes = j.find("panes");
  if (panes == j.end() || !panes->is_array()) fail(where, "panes", "a list", panes == j.end() ? json() : *panes);
  if (panes->size() > static_cast<size_t>(kMaxSessionPanes)) {
    throw InputError(describe(where + ": key 'panes'", "at most " + std::to_string(kMaxSessionPanes) + " panes",
                              std::to_string(panes->size())));
  }
  for (size_t i = 0; i < panes->size(); ++i) {
    const json& pj = (*panes)[i];
    const std::string key = "panes[" + std::to_string(i) + "].";
    if (!pj.is_object()) fail(where, "panes[" + std::to_string(i) + "]", "an object", pj);
    SessionBundle::Pane pane;
    if (const auto l = pj.find("layer"); l != pj.end()) pane.layer = small_int(*l, where, key + "layer");
    if (const auto s = pj.find("seed"); s != pj.end() && !s->is_null()) {
      if (!s->is_number_unsigned() && !(s->is_number_integer() && s->get<int64_t>() >= 0)) {
        fail(where, key + "seed", "a non-negative integer", *s);
      }
      pane.seed = s->get<quint64>();
    }
    if (pj.contains("adapter")) pane.adapter = text(pj, "adapter", where, key);
    b.panes.push_back(std::move(pane));
  }
  if (const auto l = j.find("slider_layer"); l != j.end() && !l->is_null()) {
    b.sliderLayer = small_int(*l, where, "slider_layer");
  }
  return b;
}

SessionBundle read_session_bundle(const QString& dir) {
  const QString file = QDir(dir).filePath(QStringLiteral("session.json"));
  if (!QFileInfo::exists(file)) {
    throw InputError(describe(file.toStdString(), "a session file (session.json, written by File > Export session)",
                              "no such file"));
  }
  const std::string text = read_file_limited(file.toStdString(), kMaxSessionJsonBytes, "a session file");
  return parse_session_bundle(QByteArray(text.data(), static_cast<qsizetype>(text.size())), file);
}

QByteArray read_session_image(const QString& dir, const SessionBundle& bundle) {
  if (bundle.imageFile.isEmpty()) return {};
  // The name was checked to stay inside the folder; a symlink there may still point anywhere,
  // so the read itself refuses devices and oversized files.
  const std::string bytes = read_file_limited(QDir(dir).filePath(bundle.imageFile).toStdString(),
                                              kMaxSessionImageBytes, "the session's image");
  return QByteArray(bytes.data(), static_cast<qsizetype>(bytes.size()));
}

}  // namespace icet::ui
