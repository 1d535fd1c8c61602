#include "ui/model_service.h"

#include <QCoreApplication>
#include <QThread>

#include <span>

#include "core/base/error.h"
#include "core/safety/judge_factory.h"
#include "core/safety/reward_model.h"
#include "core/vision/image.h"

namespace icet::ui {
namespace {

QString q(const std::string& s) {
  return QString::fromStdString(s);
}

ModelInfo toInfo(const engine::ModelSummary& s) {
  ModelInfo info;
  info.path = q(s.path);
  info.modelId = q(s.model_id);
  info.family = q(s.family);
  info.weightsHash = q(s.weights_hash);
  info.device = q(s.device);
  info.dtype = q(s.dtype);
  info.layers = static_cast<int>(s.vision_layers);
  info.defaultLayer = static_cast<int>(s.default_layer);
  return info;
}

QString errorText(const std::exception& e) {
  return QString::fromUtf8(e.what());
}

}  // namespace

// Worker-thread state. Only touched inside posted lambdas, which run one at a time on m_thread.
struct ModelService::Worker {
  std::unique_ptr<engine::Session> session;
  std::unique_ptr<safety::Judge> judge;
  std::unique_ptr<safety::RewardModel> reward;

  // Judges and reward models run where the session runs (its device and dtype), so verdicts do
  // not wait on the CPU beside a GPU model. Before a model is open: "auto", which resolves as
  // the session's own default (the app opens every model with the default options).
  std::string device() const { return session ? session->summary().device : "auto"; }
  std::string dtype() const { return session ? session->summary().dtype : "auto"; }

  // A judge or reward model that cannot rate an answer (e.g. longer than its context) leaves
  // the answer unrated with the reason; it never loses the answer.
  SafetyResult assess(const std::string& prompt, const std::string& answer) const {
    SafetyResult r;
    if (judge) {
      r.judgeId = q(judge->id());
      try {
        const auto v = judge->judge(prompt, answer);
        r.judged = true;
        r.unsafe = v.unsafe;
        r.pUnsafe = v.p_unsafe;
        for (const auto& c : v.categories) {
          r.categories << q(c);
        }
      } catch (const std::exception& e) {
        r.error += QStringLiteral("judge: ") + QString::fromUtf8(e.what());
      }
    }
    if (reward) {
      r.rewardId = q(reward->id());
      try {
        r.reward = reward->score(prompt, answer);
        r.scored = true;
      } catch (const std::exception& e) {
        r.error += (r.error.isEmpty() ? QString() : QStringLiteral("\n")) + QStringLiteral("reward: ") +
                   QString::fromUtf8(e.what());
      }
    }
    return r;
  }
};

ModelService::ModelService(QObject* parent, ModelOpener opener)
    : QObject(parent), m_opener(std::move(opener)), m_worker(std::make_shared<Worker>()) {
  if (!m_opener) {
    m_opener = [](const std::string& dir, const engine::ProgressCallback& progress) {
      return engine::Session::open(dir, {}, progress);
    };
  }
  qRegisterMetaType<ModelInfo>();
  qRegisterMetaType<Answer>();
  m_thread = new QThread(this);
  m_thread->setObjectName(QStringLiteral("icet-model-worker"));
  m_context = new QObject;
  m_context->moveToThread(m_thread);
  connect(m_thread, &QThread::finished, m_context, &QObject::deleteLater);
  m_thread->start();
}

ModelService::~ModelService() {
  cancelAll();
  m_thread->quit();
  m_thread->wait();  // queued requests not yet started are dropped with the event loop
  // The worker state (torch objects) is released here, after the thread has ended.
}

void ModelService::cancelAll() {
  for (auto& weak : m_cancels) {
    if (auto flag = weak.lock()) {
      flag->store(true);
    }
  }
  m_cancels.clear();
}

void ModelService::post(const QString& activity, std::function<void()> work) {
  ++m_pending;
  if (m_pending == 1) {
    Q_EMIT busyChanged(true, activity);
  }
  QMetaObject::invokeMethod(m_context, std::move(work), Qt::QueuedConnection);
}

void ModelService::done() {
  m_pending = std::max(0, m_pending - 1);
  if (m_pending == 0) {
    Q_EMIT busyChanged(false, QString());
  }
  // Forget flags of finished requests.
  std::erase_if(m_cancels, [](const auto& w) { return w.expired(); });
}

void ModelService::postTask(const QString& activity, const QString& context,
                            std::function<std::function<void()>(Worker&)> work) {
  auto worker = m_worker;
  post(activity, [this, worker, context, work = std::move(work)] {
    std::function<void()> apply;
    QString message;
    try {
      apply = work(*worker);
    } catch (const std::exception& e) {
      message = errorText(e);
    }
    QMetaObject::invokeMethod(this, [this, context, apply = std::move(apply), message] {
      done();
      if (apply) {
        apply();
      } else {
        Q_EMIT failed(context, message, 0);
      }
    });
  });
}

void ModelService::openModel(const QString& dir) {
  const std::string path = dir.toStdString();
  // Cancellable between tensors: closing the app mid-load (a 7B checkpoint takes minutes on a
  // CPU) must not wait for the whole load.
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  m_cancels.push_back(cancel);
  postTask(tr("Loading model…"), QStringLiteral("model"), [this, path, cancel](Worker& w) -> std::function<void()> {
    w.session = m_opener(path, [cancel](size_t, size_t) { return !cancel->load(); });
    const ModelInfo info = toInfo(w.session->summary());  // a new session has no adapter
    return [this, info] {
      m_info = info;
      m_imageHash.clear();
      Q_EMIT modelOpened(info);
    };
  });
}

void ModelService::loadJudge(const QString& dir) {
  const std::string path = dir.toStdString();
  postTask(tr("Loading judge…"), QStringLiteral("judge"), [this, path](Worker& w) -> std::function<void()> {
    w.judge = path.empty() ? nullptr : safety::load_judge(path, w.device(), w.dtype());
    const QString id = w.judge ? q(w.judge->id()) : QString();
    return [this, id] {
      m_judgeId = id;
      Q_EMIT safetyModelsChanged(m_judgeId, m_rewardId);
    };
  });
}

void ModelService::loadReward(const QString& dir) {
  const std::string path = dir.toStdString();
  postTask(tr("Loading reward model…"), QStringLiteral("reward"), [this, path](Worker& w) -> std::function<void()> {
    w.reward = path.empty() ? nullptr : safety::load_reward_model(path, w.device(), w.dtype());
    const QString id = w.reward ? q(w.reward->id()) : QString();
    return [this, id] {
      m_rewardId = id;
      Q_EMIT safetyModelsChanged(m_judgeId, m_rewardId);
    };
  });
}

void ModelService::loadAdapter(const QString& dir) {
  const std::string path = dir.toStdString();
  postTask(tr("Loading adapter…"), QStringLiteral("adapter"), [this, path, dir](Worker& w) -> std::function<void()> {
    if (!w.session) {
      throw InputError("no model is open: open a model before loading an adapter");
    }
    if (path.empty()) {
      for (const auto& key : w.session->adapters()) {
        w.session->remove_adapter(key);
      }
    } else {
      w.session->add_adapter(std::filesystem::path(path));  // a bad folder changes nothing
    }
    return [this, dir] {
      if (m_info) {
        m_info->adapter = dir;
        if (dir.isEmpty()) {
          m_info->adapters.clear();
        } else if (!m_info->adapters.contains(dir)) {
          m_info->adapters.push_back(dir);
        }
      }
      Q_EMIT adapterChanged(dir);
    };
  });
}

void ModelService::setImage(const QByteArray& bytes, const QString& sourceName) {
  std::vector<uint8_t> data(bytes.begin(), bytes.end());
  const std::string name = sourceName.toStdString();
  postTask(tr("Encoding image…"), QStringLiteral("image"),
           [this, data = std::move(data), name](Worker& w) -> std::function<void()> {
             const auto image = vision::decode_image(std::span<const uint8_t>(data), name);
             if (!w.session) {
               throw InputError("no model is open: open a model before setting an image");
             }
             w.session->set_image(image);
             const QString hash = q(w.session->image_hash());
             return [this, hash] {
               m_imageHash = hash;
               Q_EMIT imageReady(hash);
             };
           });
}

RequestHandle ModelService::generate(const QString& prompt, std::optional<int> layer,
                                     const generate::SamplingParams& params, const QString& adapter) {
  RequestHandle handle;
  handle.id = m_nextId++;
  m_cancels.push_back(handle.cancel);
  auto worker = m_worker;
  const std::string text = prompt.toStdString();
  const std::filesystem::path adapterDir = adapter.toStdString();
  post(tr("Generating…"), [this, worker, handle, text, layer, params, adapterDir] {
    const quint64 id = handle.id;
    if (handle.cancel->load()) {  // cancelled before it started: skip the work
      QMetaObject::invokeMethod(this, [this, id] {
        done();
        Answer a;
        a.cancelled = true;
        Q_EMIT generationFinished(id, a);
      });
      return;
    }
    try {
      if (!worker->session) {
        throw InputError("no model is open");
      }
      if (!worker->session->has_image()) {
        throw InputError("no image is set");
      }
      auto stream = handle.stream;
      Answer a;
      a.record = worker->session->generate(
          text, layer ? std::optional<int64_t>(*layer) : std::nullopt, params,
          [stream](const engine::StreamEvent& ev) { stream->append(ev.text); }, handle.cancel.get(), adapterDir);
      a.adapter = q(a.record.adapter);
      a.cancelled = handle.cancel->load() || a.record.stop_reason == "cancelled";
      if (!a.cancelled) {
        a.safety = worker->assess(text, a.record.text);
      }
      QMetaObject::invokeMethod(this, [this, id, a] {
        done();
        Q_EMIT generationFinished(id, a);
      });
    } catch (const Cancelled&) {
      QMetaObject::invokeMethod(this, [this, id] {
        done();
        Answer a;
        a.cancelled = true;
        Q_EMIT generationFinished(id, a);
      });
    } catch (const std::exception& e) {
      const QString msg = errorText(e);
      QMetaObject::invokeMethod(this, [this, msg, id] {
        done();
        Q_EMIT failed(QStringLiteral("generate"), msg, id);
      });
    }
  });
  return handle;
}

RequestHandle ModelService::sweep(const QString& prompt, const QVector<int>& layers,
                                  const generate::SamplingParams& params, const QStringList& adapters) {
  RequestHandle handle;
  handle.id = m_nextId++;
  m_cancels.push_back(handle.cancel);
  auto worker = m_worker;
  const std::string text = prompt.toStdString();
  std::vector<int64_t> ls(layers.begin(), layers.end());
  std::vector<std::filesystem::path> dirs;
  for (const QString& a : adapters) {
    dirs.emplace_back(a.toStdString());
  }
  post(tr("Sweeping layers…"), [this, worker, handle, text, ls, params, dirs] {
    const quint64 id = handle.id;
    try {
      if (!worker->session) {
        throw InputError("no model is open");
      }
      if (!worker->session->has_image()) {
        throw InputError("no image is set");
      }
      QVector<Answer> answers;
      for (const auto& dir : dirs) {
        const auto records = worker->session->sweep(text, ls, params, {}, handle.cancel.get(), dir);
        for (const auto& r : records) {
          if (handle.cancel->load()) {
            throw Cancelled();
          }
          Answer a;
          a.record = r;
          a.adapter = q(r.adapter);
          a.safety = worker->assess(text, r.text);
          answers.push_back(std::move(a));
        }
      }
      QMetaObject::invokeMethod(this, [this, id, answers] {
        done();
        Q_EMIT sweepFinished(id, answers);
      });
    } catch (const Cancelled&) {
      QMetaObject::invokeMethod(this, [this, id] {
        done();
        Q_EMIT failed(QStringLiteral("sweep"), tr("Sweep cancelled"), id);
      });
    } catch (const std::exception& e) {
      const QString msg = errorText(e);
      QMetaObject::invokeMethod(this, [this, msg, id] {
        done();
        Q_EMIT failed(QStringLiteral("sweep"), msg, id);
      });
    }
  });
  return handle;
}

}  // namespace icet::ui
