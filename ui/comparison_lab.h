#pragma once

// The comparison lab: image + prompt + model/judge/reward pickers + sampling settings on the
// left; the ICET-l layer slider; comparison panes side by side (default layer vs slider layer,
// more can be added; each pane answers with the base model or a loaded LoRA adapter); a
// per-layer sweep chart with Early/Middle/Late bands below, base and adapter curves overlaid.
// All model work goes through one ModelService (one worker thread); the GUI thread never waits
// for torch.

#include <QByteArray>
#include <QImage>
#include <QString>
#include <QVector>
#include <QWidget>

#include <QPointer>

#include <functional>
#include <optional>

#include "ui/message_bar.h"
#include "ui/model_service.h"

class QComboBox;
class QDragEnterEvent;
class QDragMoveEvent;
class QDropEvent;
class QMimeData;
class QDoubleSpinBox;
class QLabel;
class QListWidget;
class QPlainTextEdit;
class QSlider;
class QSpinBox;
class QScrollArea;
class QSplitter;
class QTimer;
class QToolButton;
class QPushButton;

namespace icet::ui {

class ComparisonPane;
class LineChart;

// Where the committed demo world lives (models/demo), or empty when it cannot be found.
QString demoRoot();

class ComparisonLab : public QWidget {
  Q_OBJECT

 public:
  explicit ComparisonLab(QWidget* parent = nullptr);
  ~ComparisonLab() override;

  ModelService* service() const { return m_service; }

  // Inputs (each reports problems through message(), never by blocking).
  void openModel(const QString& dir);
  void openJudge(const QString& dir);   // empty: none
  void openReward(const QString& dir);  // empty: none
  // A LoRA adapter (PEFT folder) for every pane; panes showing answers run again with it.
  // Empty: every adapter unloaded, every pane back to the base model.
  void loadAdapter(const QString& dir);
  // Loads an adapter for the panes' pickers and the sweep without switching any pane.
  void addAdapter(const QString& dir);
  // Before and after side by side: loads `dir` and puts a NEW pane with it right after a base
  // pane at `layer` (0: the slider's layer; -1: an early layer, ICET-8 on a 24-layer encoder),
  // runs both (and the default pane if it has no answer), and the overlaid sweep if `sweep`.
  void compareWithAdapter(const QString& dir, int layer = 0, bool sweep = false);
  // The demo story's lab half: a harmful gallery example, the default pane, base and `dir`
  // panes at an early layer side by side, all run, then the overlaid sweep.
  void showBeforeAfter(const QString& dir);
  // The first-start demo (issue 18) on the demo world at `root` (demoRoot()): the demo banner
  // offers the gallery's first harmful prompt and a benign one (picking runs them), the first
  // harmful example is opened, and once the model is in, the default pane and the slider's early
  // pane answer it. "Show the fix" is armed when `root`/adapter holds the shipped L-PPO adapter.
  // False (nothing staged) when the gallery holds no harmful example.
  bool startDemo(const QString& root);
  // Puts the demo's harmful (true) or benign prompt in the prompt box and runs every pane.
  void pickDemoPrompt(bool harmful);
  // "Show the fix": the demo adapter in a new pane beside the base pane at the slider's layer,
  // answering the same prompt (compareWithAdapter), on the demo model; with no image or prompt
  // yet, the demo's harmful example first.
  void showDemoFix();
  // `root`/adapter when it holds a PEFT adapter (adapter_config.json + weights), else empty.
  static QString demoAdapter(const QString& root);
  QString adapterPath() const;  // the adapter loaded last (the sweep overlays it), empty for none
  QStringList adapters() const;  // every loaded adapter
  bool openImageFile(const QString& path);
  void setImage(const QImage& image, const QString& name);  // pasted or gallery images
  void setImageBytes(const QByteArray& bytes, const QString& name);
  void setPrompt(const QString& prompt);
  QString prompt() const;
  // Clipboard: an image, an image file (URL) or text for the prompt.
  void pasteFromClipboard();
  // Dropped (or pasted) data: the first file URL, else image data. A file that is not an
  // image, a remote URL or unusable data shows an error; the current image stays.
  static bool canDropImage(const QMimeData* mime);
  bool dropImage(const QMimeData* mime, const QString& name = QString());
  // Loads a prompt set (JSONL: id, image, prompt, ...) into the example gallery.
  bool loadGallery(const QString& path);
  int galleryCount() const;
  void openGalleryExample(int row);
  int firstHarmfulExample() const;  // gallery row, -1 when none is marked harmful

  generate::SamplingParams samplingParams() const;
  void setSamplingParams(const generate::SamplingParams& params);

  // Runs every pane (Ctrl+Enter) / stops every pane (Esc).
  void runAll();
  void stopAll();
  void runSweep();
  bool isBusy() const;

  QSlider* layerSlider() const { return m_slider; }
  QVector<ComparisonPane*> panes() const;
  // A new pane at `layer` answering with `adapter` (empty: base), at `index` (-1: last).
  ComparisonPane* addPane(int layer, const QString& adapter = QString(), int index = -1);
  void removePane(ComparisonPane* pane);
  LineChart* sweepChart() const { return m_sweepChart; }
  const QVector<Answer>& sweepAnswers() const { return m_sweep; }
  void openSweepLayer(int layer);
  void setPresentationMode(bool on);
  // Answers opened from elsewhere (training rollouts): a new pane showing it.
  void showExternalAnswer(const QString& prompt, const QString& answer, int layer, double reward,
                          const QString& imagePath);

  QString modelPath() const { return m_modelPath; }
  QString judgePath() const { return m_judgePath; }
  QString rewardPath() const { return m_rewardPath; }
  QByteArray imageBytes() const { return m_imageBytes; }
  QString imageName() const { return m_imageName; }

  // Session bundle: settings, seeds, image, answers, a PNG of the panes, an HTML report.
  bool exportBundle(const QString& dir);
  // Restores a bundle and replays every pane with its recorded layer and seed.
  bool openBundle(const QString& dir);

 Q_SIGNALS:
  void message(icet::ui::MessageBar::Kind kind, const QString& text);
  void modelChanged(const icet::ui::ModelInfo& info);
  void adapterChanged(const QString& dir);
  void busyChanged(bool busy, const QString& activity);
  void allFinished();
  void sweepFinished();

 protected:
  void dragEnterEvent(QDragEnterEvent* event) override;
  void dragMoveEvent(QDragMoveEvent* event) override;
  void dropEvent(QDropEvent* event) override;
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  QWidget* buildInputs();
  QWidget* buildDemoBanner();
  // Runs `then` on the GUI thread once the model being opened is in (at once when it already
  // is); dropped when the model fails to open.
  void whenModelReady(std::function<void()> then);
  void onAdapterChanged(const QString& dir);
  // Asks the worker for an adapter (empty: unload all); `then` runs once it is in.
  void requestAdapter(const QString& dir, std::function<void()> then);
  void updateModelLabel();
  QWidget* buildSampling();
  void fillModelPickers();
  void onModelOpened(const ModelInfo& info);
  void onFailed(const QString& context, const QString& message, quint64 id);
  void onSliderMoved();
  void onPaneFinished();
  void onSweepFinished(quint64 id, const QVector<Answer>& answers);
  void showSweep();
  void updateSliderLabel();
  // Decodes `bytes` for the preview on a pool thread (a large or hostile file must not stall
  // the GUI); the newest request wins, older results are dropped.
  void showPreview(const QByteArray& bytes);
  void updatePreview(const QImage& image);
  void addRecent(const QString& key, const QString& value);
  void runPane(ComparisonPane* pane);
  void error(const QString& text);

  ModelService* m_service = nullptr;
  QLabel* m_preview = nullptr;
  quint64 m_previewTicket = 0;  // the newest showPreview request
  QToolButton* m_recentImages = nullptr;
  QListWidget* m_gallery = nullptr;
  QPlainTextEdit* m_prompt = nullptr;
  QComboBox* m_modelPicker = nullptr;
  QComboBox* m_judgePicker = nullptr;
  QComboBox* m_rewardPicker = nullptr;
  QSpinBox* m_seed = nullptr;
  QDoubleSpinBox* m_temperature = nullptr;
  QSpinBox* m_maxTokens = nullptr;
  QComboBox* m_logitsPolicy = nullptr;  // data: "clean" / "hf"; kept in QSettings "sampling/logitsPolicy"
  QSlider* m_slider = nullptr;
  QLabel* m_sliderLabel = nullptr;
  QTimer* m_debounce = nullptr;
  QSplitter* m_paneSplitter = nullptr;
  QScrollArea* m_paneScroll = nullptr;  // holds m_paneSplitter
  // The first-start demo banner: a harmful and a benign prompt to pick, and "Show the fix".
  QWidget* m_demoBanner = nullptr;
  QPushButton* m_demoHarmful = nullptr;
  QPushButton* m_demoBenign = nullptr;
  QPushButton* m_showFix = nullptr;
  QString m_demoRoot;
  int m_demoExample = -1;  // gallery row of the demo's harmful example
  QString m_demoBenignPrompt;
  LineChart* m_sweepChart = nullptr;
  QLabel* m_modelLabel = nullptr;
  QPushButton* m_runButton = nullptr;
  QPushButton* m_stopButton = nullptr;
  QPushButton* m_sweepButton = nullptr;
  std::optional<RequestHandle> m_sweepHandle;
  QVector<Answer> m_sweep;
  QString m_sweepPrompt;
  QString m_modelPath;
  QString m_judgePath;
  QString m_rewardPath;
  QByteArray m_imageBytes;
  QString m_imageName;
  // The image the model last accepted, restored when a newer one fails to decode.
  QByteArray m_goodImageBytes;
  QString m_goodImageName;
  int m_imageRequests = 0;  // image requests on their way to the worker
  QString m_lastPrompt;  // the prompt of the last run (slider moves re-run with it)
  // Adapter requests on their way to the worker, in order, with what to do once each is in.
  QVector<QPair<QString, std::function<void()>>> m_adapterRequests;
  bool m_presentation = false;
  bool m_loadingModel = false;
  int m_defaultLayer = 0;
};

}  // namespace icet::ui
