#pragma once

// One answer in the comparison lab: its own exit layer, seed and LoRA adapter (base model or a
// loaded adapter, so base and aligned answers sit side by side), streaming text drained from
// the worker's buffer on a ~40 ms timer, Stop/Regenerate, and a header with the layer, the
// judge's verdict (icon + text; P(unsafe) and categories on hover), reward and tokens/s.

#include <QFrame>

#include <optional>

#include "ui/model_service.h"

class QLabel;
class QSpinBox;
class QCheckBox;
class QComboBox;
class QTextBrowser;
class QTimer;
class QToolButton;

namespace icet::ui {

// A short name for an adapter folder: the training run's folder for ".../<run>/adapter".
QString adapterName(const QString& dir);

class ComparisonPane : public QFrame {
  Q_OBJECT

 public:
  ComparisonPane(ModelService* service, QWidget* parent = nullptr);
  ~ComparisonPane() override;

  void setLayerRange(int layers, int defaultLayer);
  int layer() const;
  void setLayer(int layer);
  // A fixed seed for this pane, or none (the lab's seed is used).
  std::optional<quint64> seed() const;
  void setSeed(std::optional<quint64> seed);
  // The LoRA adapter folder this pane answers with; empty: the base model.
  QString adapter() const { return m_adapter; }
  void setAdapter(const QString& dir);
  // The loaded adapters the picker offers (besides the base model).
  void setAdapterChoices(const QStringList& dirs);
  // The pane that follows the checkpoint's default layer (the diff baseline).
  void setBaseline(bool baseline);
  bool isBaseline() const { return m_baseline; }

  // Cancels any running generation of this pane, then starts a new one.
  void run(const QString& prompt, generate::SamplingParams params);
  void stop();
  bool isRunning() const { return m_handle.has_value(); }

  QString text() const { return m_text; }
  const std::optional<Answer>& answer() const { return m_answer; }
  // Shows the answer (e.g. from a sweep or a rollout) without generating.
  void showAnswer(const Answer& answer);
  void clearAnswer();
  // The baseline answer for the word diff; empty: no diff.
  void setDiffBase(const QString& base);
  void setPresentationMode(bool on);
  bool isBlurred() const;
  void reveal();
  QString verdictText() const;

 Q_SIGNALS:
  void finished();
  void regenerateRequested();
  void removeRequested();
  void layerEdited(int layer);
  void adapterEdited(const QString& dir);
  void adapterFolderRequested();  // "Load adapter folder…" in the picker

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;
  void changeEvent(QEvent* event) override;  // a new palette recolours the diff, a new font refits the picker

 private:
  void drain();
  void onFinished(quint64 id, const Answer& answer);
  void onFailed(const QString& context, const QString& message, quint64 id);
  void updateHeader();
  void fillAdapterPicker(const QStringList& dirs);
  void fitAdapterPicker();  // minimum width: the chosen item whole
  void render();

  ModelService* m_service;
  QLabel* m_title = nullptr;
  QSpinBox* m_layer = nullptr;
  QCheckBox* m_ownSeed = nullptr;
  QSpinBox* m_seed = nullptr;
  QLabel* m_badge = nullptr;
  QLabel* m_reward = nullptr;
  QLabel* m_speed = nullptr;
  QLabel* m_adapterTag = nullptr;
  QComboBox* m_adapterPicker = nullptr;
  QToolButton* m_stop = nullptr;
  QToolButton* m_regen = nullptr;
  QToolButton* m_remove = nullptr;
  QTextBrowser* m_view = nullptr;
  QTimer* m_drain = nullptr;
  std::optional<RequestHandle> m_handle;
  std::optional<Answer> m_answer;
  QString m_text;
  QString m_diffBase;
  QString m_error;
  QString m_adapter;
  int m_defaultLayer = 0;
  int m_wantedLayer = 1;
  bool m_baseline = false;
  bool m_presentation = false;
  bool m_revealed = false;
};

}  // namespace icet::ui
