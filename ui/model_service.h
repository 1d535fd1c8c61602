#pragma once

// The comparison lab's model worker: ONE QThread owns the engine Session, the judge and the
// reward model (a Session is one-thread-at-a-time), and runs requests in the order they come.
// The GUI thread only posts requests and receives one queued signal per finished request;
// tokens go to a mutex-guarded StreamBuffer that the pane drains on its own timer.
// Torch-free header: the judge and reward model live behind the worker in the .cpp.

#include <QByteArray>
#include <QObject>
#include <QString>
#include <QStringList>
#include <QVector>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/engine/session.h"
#include "core/generate/sampling_params.h"

class QThread;

namespace icet::ui {

struct ModelInfo {
  QString path;
  QString modelId;
  QString family;
  QString weightsHash;
  QString device;
  QString dtype;
  int layers = 0;        // exit layers are 1..layers
  int defaultLayer = 0;  // the checkpoint's own exit layer
  QString adapter;       // the LoRA adapter folder loaded last (the lab's current one), empty when none
  QStringList adapters;  // every loaded adapter folder: a request may use any of them
};

// Judge verdict and reward for one answer; `judged`/`scored` say whether a model was loaded.
struct SafetyResult {
  bool judged = false;
  bool unsafe = false;
  double pUnsafe = 0.0;
  QStringList categories;
  QString judgeId;
  bool scored = false;
  double reward = 0.0;
  QString rewardId;
  QString error;  // why the judge or reward model could not rate this answer (the answer stays)
};

struct Answer {
  engine::GenerationRecord record;  // replay info: model, hashes, layer, params with seed
  SafetyResult safety;
  QString adapter;  // the LoRA adapter folder the answer was generated with, empty for the base model
  bool cancelled = false;
};

// Token text appended by the worker, taken by the GUI on a timer (no signal per token).
class StreamBuffer {
 public:
  void append(const std::string& text) {
    std::lock_guard lock(m_mutex);
    m_pending += text;
  }
  QString take() {
    std::lock_guard lock(m_mutex);
    QString out = QString::fromStdString(m_pending);
    m_pending.clear();
    return out;
  }

 private:
  std::mutex m_mutex;
  std::string m_pending;
};

// One request's cancel flag and stream. Cancel is set directly from the GUI (atomic), never
// by a queued call, so it works while the worker is busy.
struct RequestHandle {
  quint64 id = 0;
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<StreamBuffer> stream = std::make_shared<StreamBuffer>();
  void requestCancel() const { cancel->store(true); }
};

class ModelService : public QObject {
  Q_OBJECT

 public:
  // Opens a snapshot on the worker; `progress` returns false once the load is cancelled.
  using ModelOpener =
      std::function<std::unique_ptr<engine::Session>(const std::string& dir, const engine::ProgressCallback& progress)>;

  // `opener`: engine::Session::open with the default options unless given (tests).
  explicit ModelService(QObject* parent = nullptr, ModelOpener opener = {});
  ~ModelService() override;  // cancels everything (a model load within one tensor) and joins the worker

  // All of these return at once; results arrive as signals on the GUI thread.
  void openModel(const QString& dir);
  void loadJudge(const QString& dir);   // empty: no judge
  void loadReward(const QString& dir);  // empty: no reward model
  // Loads a LoRA adapter folder next to the ones already loaded (again: reloads it); empty:
  // unloads every adapter.
  void loadAdapter(const QString& dir);
  // Encoded image bytes (PNG, JPEG, ...); decoded and encoded on the worker.
  void setImage(const QByteArray& bytes, const QString& sourceName);
  // `adapter`: a loaded adapter folder, empty for the base model.
  RequestHandle generate(const QString& prompt, std::optional<int> layer,
                         const generate::SamplingParams& params, const QString& adapter = QString());
  // One batched sweep per entry of `adapters` (empty entry: the base model), answers in that
  // order; the image's encoder states are shared.
  RequestHandle sweep(const QString& prompt, const QVector<int>& layers,
                      const generate::SamplingParams& params, const QStringList& adapters = {QString()});
  void cancelAll();

  bool hasModel() const { return m_info.has_value(); }
  const std::optional<ModelInfo>& model() const { return m_info; }
  bool hasImage() const { return !m_imageHash.isEmpty(); }
  QString imageHash() const { return m_imageHash; }
  QString judgeId() const { return m_judgeId; }
  QString rewardId() const { return m_rewardId; }
  int pending() const { return m_pending; }

 Q_SIGNALS:
  void modelOpened(const icet::ui::ModelInfo& info);
  void imageReady(const QString& imageHash);
  void adapterChanged(const QString& adapterDir);  // loaded (or reloaded); empty: all unloaded
  void safetyModelsChanged(const QString& judgeId, const QString& rewardId);
  void generationFinished(quint64 id, const icet::ui::Answer& answer);
  void sweepFinished(quint64 id, const QVector<icet::ui::Answer>& answers);
  // `context`: "model", "image", "judge", "reward", "adapter", "generate", "sweep".
  void failed(const QString& context, const QString& message, quint64 id);
  void busyChanged(bool busy, const QString& activity);

 private:
  struct Worker;
  void post(const QString& activity, std::function<void()> work);
  // Runs `work` on the worker. What it returns runs next on the GUI thread (state updates and
  // the success signal); an exception from it becomes failed(context, its message).
  void postTask(const QString& activity, const QString& context,
                std::function<std::function<void()>(Worker&)> work);
  void done();

  ModelOpener m_opener;
  QThread* m_thread = nullptr;
  QObject* m_context = nullptr;  // lives on m_thread; queued lambdas run there
  std::shared_ptr<Worker> m_worker;
  std::optional<ModelInfo> m_info;
  QString m_imageHash;
  QString m_judgeId;
  QString m_rewardId;
  quint64 m_nextId = 1;
  int m_pending = 0;
  std::vector<std::weak_ptr<std::atomic<bool>>> m_cancels;
};

}  // namespace icet::ui

Q_DECLARE_METATYPE(icet::ui::ModelInfo)
Q_DECLARE_METATYPE(icet::ui::Answer)
