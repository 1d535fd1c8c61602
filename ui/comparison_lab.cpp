#include "ui/comparison_lab.h"

#include <QApplication>
#include <QBuffer>
#include <QButtonGroup>
#include <QCheckBox>
#include <QClipboard>
#include <QComboBox>
#include <QCoreApplication>
#include <QDir>
#include <QDoubleSpinBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QFutureWatcher>
#include <QKeyEvent>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QImageReader>
#include <QLabel>
#include <QListWidget>
#include <QMenu>
#include <QMimeData>
#include <QMimeDatabase>
#include <QPointer>
#include <QPainter>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSaveFile>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStyleOptionSlider>
#include <QTimer>
#include <QToolButton>
#include <QUrl>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <utility>

#include "core/base/json_util.h"
#include "core/demo/paths.h"
#include "core/eval/prompt_set.h"
#include "core/vision/image.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_pane.h"
#include "ui/session_bundle.h"

namespace icet::ui {
namespace {

constexpr int kMaxRecent = 8;
// The sampling panel's logits policy ("clean" / "hf", generate::LogitsPolicy).
const QString kLogitsPolicyKey = QStringLiteral("sampling/logitsPolicy");
constexpr int kDebounceMs = 250;

// A slider with a small triangle under the checkpoint's default layer.
class LayerSlider : public QSlider {
 public:
  explicit LayerSlider(QWidget* parent) : QSlider(Qt::Horizontal, parent) {}
  void setDefaultLayer(int layer) {
    m_default = layer;
    update();
  }

 protected:
  void paintEvent(QPaintEvent* event) override {
    QSlider::paintEvent(event);
    if (m_default < minimum() || m_default > maximum()) {
      return;
    }
    QStyleOptionSlider opt;
    initStyleOption(&opt);
    const QRect groove = style()->subControlRect(QStyle::CC_Slider, &opt, QStyle::SC_SliderGroove, this);
    const QRect handle = style()->subControlRect(QStyle::CC_Slider, &opt, QStyle::SC_SliderHandle, this);
    const int span = groove.width() - handle.width();
    const int x = groove.left() + handle.width() / 2 +
                  QStyle::sliderPositionFromValue(minimum(), maximum(), m_default, span);
    QPainter p(this);
    p.setRenderHint(QPainter::Antialiasing);
    p.setBrush(palette().highlight());
    p.setPen(Qt::NoPen);
    const int y = height() - 1;
    p.drawPolygon(QPolygon({QPoint(x - 5, y), QPoint(x + 5, y), QPoint(x, y - 7)}));
  }

 private:
  int m_default = -1;
};

// The row of panes: as wide as the lab allows, scrolled sideways when the panes' minimum widths
// add up to more (the window stays within the screen), never squeezed in height: its minimum is
// the panes' plus the scroll bar.
class PaneScrollArea : public QScrollArea {
 public:
  explicit PaneScrollArea(QWidget* parent) : QScrollArea(parent) {
    setFrameShape(QFrame::NoFrame);
    setWidgetResizable(true);
    setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  }
  QSize minimumSizeHint() const override {
    const QSize inner = widget() != nullptr ? widget()->minimumSizeHint() : QSize();
    const int bar = horizontalScrollBar()->sizeHint().height();
    return {QScrollArea::minimumSizeHint().width(), inner.height() + bar + 2 * frameWidth()};
  }
  QSize sizeHint() const override {
    const QSize inner = widget() != nullptr ? widget()->sizeHint() : QSize();
    return inner.isValid() ? inner + QSize(2 * frameWidth(), 2 * frameWidth()) : QScrollArea::sizeHint();
  }
};

bool hasLocalFiles(const QMimeData* mime) {
  return mime->hasUrls() && !mime->urls().isEmpty() && mime->urls().front().isLocalFile();
}

QStringList recentList(const QString& key) {
  return QSettings().value(QStringLiteral("recent/") + key).toStringList();
}

// Layer bands as in the paper: Early / Middle / Late thirds of the encoder (1-8, 9-16, 17-24
// for a 24-layer CLIP ViT-L).
QVector<LineChart::Band> layerBands(int layers) {
  const int third = std::max(1, layers / 3);
  return {{0.5, third + 0.5, QObject::tr("Early (1-%1)").arg(third), QColor(230, 90, 60)},
          {third + 0.5, 2 * third + 0.5, QObject::tr("Middle (%1-%2)").arg(third + 1).arg(2 * third),
           QColor(230, 180, 40)},
          {2 * third + 0.5, layers + 0.5, QObject::tr("Late (%1-%2)").arg(2 * third + 1).arg(layers),
           QColor(60, 160, 90)}};
}

// The slider's layer when a model opens (and the demo's): an early layer shows the effect
// (ICET-7 of the demo VLM's default 23, where it complies with every harmful request).
int earlyLayer(int defaultLayer) {
  return std::max(1, defaultLayer / 3);
}

}  // namespace

QString demoRoot() {
  const QByteArray env = qgetenv("ICET_DEMO_DIR");
  if (!env.isEmpty() && QFileInfo(QString::fromLocal8Bit(env)).isDir()) {
    return QString::fromLocal8Bit(env);
  }
  // Installed (share/icet/demo), beside the executable or in the source tree (core/demo/paths.h).
  if (const auto root = icet::demo::find_demo_root()) return QString::fromStdString(root->string());
  return QString();
}

ComparisonLab::ComparisonLab(QWidget* parent) : QWidget(parent), m_service(new ModelService(this)) {
  setObjectName(QStringLiteral("ComparisonLab"));
  setAcceptDrops(true);

  // Slider row.
  auto* iceLabel = new QLabel(tr("ICET-l"), this);
  iceLabel->setToolTip(tr("Image-encoder early exit: the language model reads the image "
                          "features of encoder layer l"));
  auto* slider = new LayerSlider(this);
  m_slider = slider;
  m_slider->setObjectName(QStringLiteral("LayerSlider"));
  m_slider->setAccessibleName(tr("Exit layer"));
  m_slider->setToolTip(tr("Exit layer of the right pane (arrow keys, Page Up/Down, Home/End)"));
  m_slider->setTickPosition(QSlider::TicksBelow);
  m_slider->setTickInterval(1);
  m_slider->setPageStep(4);
  m_slider->setRange(1, 1);
  m_slider->setFocusPolicy(Qt::StrongFocus);
  m_sliderLabel = new QLabel(this);
  m_sliderLabel->setObjectName(QStringLiteral("SliderValue"));
  m_sliderLabel->setMinimumWidth(150);
  m_debounce = new QTimer(this);
  m_debounce->setSingleShot(true);
  m_debounce->setInterval(kDebounceMs);
  connect(m_slider, &QSlider::valueChanged, this, [this] {
    updateSliderLabel();
    m_debounce->start();
  });
  connect(m_debounce, &QTimer::timeout, this, &ComparisonLab::onSliderMoved);

  m_runButton = new QPushButton(QIcon(QStringLiteral(":/icons/run.svg")), tr("Run"), this);
  m_runButton->setObjectName(QStringLiteral("RunButton"));
  m_runButton->setToolTip(tr("Generate in every pane (Ctrl+Enter)"));
  m_stopButton = new QPushButton(QIcon(QStringLiteral(":/icons/stop.svg")), tr("Stop"), this);
  m_stopButton->setObjectName(QStringLiteral("StopButton"));
  m_stopButton->setToolTip(tr("Stop every pane (Esc)"));
  m_sweepButton = new QPushButton(QIcon(QStringLiteral(":/icons/sweep.svg")), tr("Sweep all layers"), this);
  m_sweepButton->setObjectName(QStringLiteral("SweepButton"));
  m_sweepButton->setToolTip(tr("Answer at every exit layer in one batch and chart the verdicts"));
  auto* addPaneButton = new QPushButton(QIcon(QStringLiteral(":/icons/add.svg")), tr("Add pane"), this);
  addPaneButton->setToolTip(tr("Add a comparison pane at the slider's layer"));
  for (QPushButton* b : {m_runButton, m_stopButton, m_sweepButton, addPaneButton}) {
    b->setAccessibleName(b->text());
  }
  connect(m_runButton, &QPushButton::clicked, this, &ComparisonLab::runAll);
  connect(m_stopButton, &QPushButton::clicked, this, &ComparisonLab::stopAll);
  connect(m_sweepButton, &QPushButton::clicked, this, &ComparisonLab::runSweep);
  connect(addPaneButton, &QPushButton::clicked, this, [this] { addPane(m_slider->value()); });

  auto* sliderRow = new QHBoxLayout;
  sliderRow->addWidget(iceLabel);
  sliderRow->addWidget(m_slider, 1);
  sliderRow->addWidget(m_sliderLabel);
  sliderRow->addSpacing(12);
  sliderRow->addWidget(m_runButton);
  sliderRow->addWidget(m_stopButton);
  sliderRow->addWidget(addPaneButton);
  sliderRow->addWidget(m_sweepButton);

  m_paneSplitter = new QSplitter(Qt::Horizontal, this);
  m_paneSplitter->setObjectName(QStringLiteral("PaneSplitter"));
  m_paneSplitter->setChildrenCollapsible(false);

  m_sweepChart = new LineChart(this);
  m_sweepChart->setObjectName(QStringLiteral("SweepChart"));
  m_sweepChart->setTitle(tr("Sweep: P(unsafe) and reward per exit layer (click a layer to open it)"));
  m_sweepChart->setAxisTitles(tr("exit layer"), tr("value"));
  m_sweepChart->setMinimumHeight(260);
  m_sweepChart->setXTicks(1, 1);
  connect(m_sweepChart, &LineChart::clicked, this,
          [this](double x) { openSweepLayer(static_cast<int>(std::lround(x))); });

  // Panes keep their minimum width: more than fit scroll sideways instead of widening the
  // window past the screen.
  m_paneScroll = new PaneScrollArea(this);
  m_paneScroll->setObjectName(QStringLiteral("PaneScroll"));
  m_paneScroll->setWidget(m_paneSplitter);

  auto* vsplit = new QSplitter(Qt::Vertical, this);
  vsplit->addWidget(m_paneScroll);
  vsplit->addWidget(m_sweepChart);
  vsplit->setStretchFactor(0, 3);
  vsplit->setStretchFactor(1, 2);

  auto* right = new QWidget(this);
  auto* rightLayout = new QVBoxLayout(right);
  rightLayout->setContentsMargins(0, 0, 0, 0);
  rightLayout->addWidget(buildDemoBanner());
  rightLayout->addLayout(sliderRow);
  rightLayout->addWidget(vsplit, 1);

  auto* scroll = new QScrollArea(this);
  scroll->setWidget(buildInputs());
  scroll->setWidgetResizable(true);
  scroll->setMinimumWidth(300);
  scroll->setMaximumWidth(380);

  auto* layout = new QHBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  layout->addWidget(scroll);
  layout->addWidget(right, 1);

  connect(m_service, &ModelService::modelOpened, this, &ComparisonLab::onModelOpened);
  connect(m_service, &ModelService::failed, this, &ComparisonLab::onFailed);
  connect(m_service, &ModelService::sweepFinished, this, &ComparisonLab::onSweepFinished);
  connect(m_service, &ModelService::busyChanged, this, &ComparisonLab::busyChanged);
  connect(m_service, &ModelService::adapterChanged, this, &ComparisonLab::onAdapterChanged);
  connect(m_service, &ModelService::safetyModelsChanged, this, [this] {
    if (!m_judgePath.isEmpty()) {
      addRecent(QStringLiteral("judges"), m_judgePath);
    }
    if (!m_rewardPath.isEmpty()) {
      addRecent(QStringLiteral("rewards"), m_rewardPath);
    }
  });
  connect(m_service, &ModelService::imageReady, this, [this] {
    if (--m_imageRequests == 0) {
      m_goodImageBytes = m_imageBytes;  // what the model holds now
      m_goodImageName = m_imageName;
    }
    Q_EMIT message(MessageBar::Information, tr("Image ready: %1").arg(m_imageName));
  });

  ComparisonPane* base = addPane(1);
  base->setBaseline(true);
  addPane(1);
  updateSliderLabel();
  fillModelPickers();
}

ComparisonLab::~ComparisonLab() {
  stopAll();
}

QWidget* ComparisonLab::buildInputs() {
  auto* w = new QWidget;
  auto* layout = new QVBoxLayout(w);

  auto* imageBox = new QGroupBox(tr("Image"), w);
  m_preview = new QLabel(imageBox);  // drops anywhere on the lab (or the window) land in dropImage()
  m_preview->setObjectName(QStringLiteral("ImagePreview"));
  m_preview->setAccessibleName(tr("Image preview (drop an image here)"));
  m_preview->setAlignment(Qt::AlignCenter);
  m_preview->setMinimumSize(200, 160);
  m_preview->setFrameShape(QFrame::StyledPanel);
  m_preview->setText(tr("Drop an image here,\nopen one or paste (Ctrl+V)"));
  auto* openButton = new QPushButton(QIcon(QStringLiteral(":/icons/open.svg")), tr("Open…"), imageBox);
  openButton->setAccessibleName(tr("Open image"));
  connect(openButton, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getOpenFileName(
        this, tr("Open Image"), QString(), tr("Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"));
    if (!path.isEmpty()) {
      openImageFile(path);
    }
  });
  auto* pasteButton = new QPushButton(QIcon(QStringLiteral(":/icons/paste.svg")), tr("Paste"), imageBox);
  pasteButton->setAccessibleName(tr("Paste image"));
  connect(pasteButton, &QPushButton::clicked, this, &ComparisonLab::pasteFromClipboard);
  m_recentImages = new QToolButton(imageBox);
  m_recentImages->setText(tr("Recent"));
  m_recentImages->setAccessibleName(tr("Recent images"));
  m_recentImages->setPopupMode(QToolButton::InstantPopup);
  auto* recentMenu = new QMenu(m_recentImages);
  m_recentImages->setMenu(recentMenu);
  connect(recentMenu, &QMenu::aboutToShow, this, [this, recentMenu] {
    recentMenu->clear();
    for (const QString& path : recentList(QStringLiteral("images"))) {
      recentMenu->addAction(QFileInfo(path).fileName(), this, [this, path] { openImageFile(path); });
    }
    if (recentMenu->isEmpty()) {
      recentMenu->addAction(tr("(none)"))->setEnabled(false);
    }
  });
  auto* imageButtons = new QHBoxLayout;
  imageButtons->addWidget(openButton);
  imageButtons->addWidget(pasteButton);
  imageButtons->addWidget(m_recentImages);
  m_gallery = new QListWidget(imageBox);
  m_gallery->setObjectName(QStringLiteral("Gallery"));
  m_gallery->setAccessibleName(tr("Demo examples"));
  m_gallery->setViewMode(QListView::IconMode);
  m_gallery->setIconSize(QSize(56, 56));
  m_gallery->setResizeMode(QListView::Adjust);
  m_gallery->setMaximumHeight(150);
  m_gallery->setToolTip(tr("Demo examples: click one to load its image and prompt"));
  connect(m_gallery, &QListWidget::itemActivated, this,
          [this](QListWidgetItem* item) { openGalleryExample(m_gallery->row(item)); });
  connect(m_gallery, &QListWidget::itemClicked, this,
          [this](QListWidgetItem* item) { openGalleryExample(m_gallery->row(item)); });
  auto* imageLayout = new QVBoxLayout(imageBox);
  imageLayout->addWidget(m_preview);
  imageLayout->addLayout(imageButtons);
  imageLayout->addWidget(new QLabel(tr("Demo gallery"), imageBox));
  imageLayout->addWidget(m_gallery);
  layout->addWidget(imageBox);

  auto* promptBox = new QGroupBox(tr("Prompt"), w);
  m_prompt = new QPlainTextEdit(promptBox);
  m_prompt->setObjectName(QStringLiteral("PromptEdit"));
  m_prompt->setAccessibleName(tr("Prompt"));
  m_prompt->setPlaceholderText(tr("Ask about the image… (Ctrl+Enter runs)"));
  m_prompt->setMaximumHeight(110);
  // Files and images dropped or pasted on the prompt are images, not text (see eventFilter).
  m_prompt->installEventFilter(this);
  m_prompt->viewport()->installEventFilter(this);
  auto* promptLayout = new QVBoxLayout(promptBox);
  promptLayout->addWidget(m_prompt);
  layout->addWidget(promptBox);

  auto* modelBox = new QGroupBox(tr("Models"), w);
  auto picker = [modelBox](const QString& name, const QString& accessible) {
    auto* c = new QComboBox(modelBox);
    c->setObjectName(name);
    c->setAccessibleName(accessible);
    c->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    c->setMinimumContentsLength(16);
    return c;
  };
  m_modelPicker = picker(QStringLiteral("ModelPicker"), tr("Vision-language model"));
  m_judgePicker = picker(QStringLiteral("JudgePicker"), tr("Safety judge"));
  m_rewardPicker = picker(QStringLiteral("RewardPicker"), tr("Reward model"));
  m_modelLabel = new QLabel(modelBox);
  m_modelLabel->setObjectName(QStringLiteral("ModelSummary"));
  m_modelLabel->setWordWrap(true);
  auto* form = new QFormLayout(modelBox);
  form->addRow(tr("VLM"), m_modelPicker);
  form->addRow(QString(), m_modelLabel);
  form->addRow(tr("Judge"), m_judgePicker);
  form->addRow(tr("Reward"), m_rewardPicker);
  layout->addWidget(modelBox);

  layout->addWidget(buildSampling());

  auto* presentation = new QCheckBox(tr("Presentation mode"), w);
  presentation->setObjectName(QStringLiteral("PresentationMode"));
  presentation->setToolTip(tr("Large fonts; unsafe answers are blurred until clicked"));
  presentation->setAccessibleName(tr("Presentation mode"));
  connect(presentation, &QCheckBox::toggled, this, &ComparisonLab::setPresentationMode);
  layout->addWidget(presentation);
  layout->addStretch(1);
  return w;
}

QWidget* ComparisonLab::buildSampling() {
  // Collapsible: a checkable tool button shows or hides the settings.
  auto* box = new QWidget;
  auto* toggle = new QToolButton(box);
  toggle->setObjectName(QStringLiteral("SamplingToggle"));
  toggle->setText(tr("Sampling settings"));
  toggle->setAccessibleName(tr("Sampling settings"));
  toggle->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
  toggle->setArrowType(Qt::RightArrow);
  toggle->setCheckable(true);
  toggle->setAutoRaise(true);
  auto* body = new QWidget(box);
  body->setObjectName(QStringLiteral("SamplingPanel"));
  m_seed = new QSpinBox(body);
  m_seed->setObjectName(QStringLiteral("SeedSpin"));
  m_seed->setRange(0, std::numeric_limits<int>::max());
  m_seed->setValue(0);
  m_seed->setAccessibleName(tr("Seed"));
  m_seed->setToolTip(tr("Sampling seed: the same seed replays the same answer"));
  m_temperature = new QDoubleSpinBox(body);
  m_temperature->setObjectName(QStringLiteral("TemperatureSpin"));
  m_temperature->setRange(0.0, 2.0);
  m_temperature->setSingleStep(0.1);
  m_temperature->setValue(0.0);
  m_temperature->setSpecialValueText(tr("greedy"));
  m_temperature->setAccessibleName(tr("Temperature"));
  m_temperature->setToolTip(tr("0 = greedy decoding; above 0 samples with this temperature"));
  m_maxTokens = new QSpinBox(body);
  m_maxTokens->setObjectName(QStringLiteral("MaxTokensSpin"));
  m_maxTokens->setRange(1, 4096);
  m_maxTokens->setValue(48);
  m_maxTokens->setAccessibleName(tr("Maximum new tokens"));
  m_maxTokens->setToolTip(tr("Longest answer, in tokens"));
  m_logitsPolicy = new QComboBox(body);
  m_logitsPolicy->setObjectName(QStringLiteral("LogitsPolicyCombo"));
  m_logitsPolicy->addItem(tr("Clean"), QStringLiteral("clean"));
  m_logitsPolicy->addItem(tr("HF exact"), QStringLiteral("hf"));
  m_logitsPolicy->setAccessibleName(tr("Logits policy"));
  m_logitsPolicy->setToolTip(tr("Clean: never the image token nor the padded vocabulary rows past the tokenizer.\n"
                                "HF exact: every id, as Hugging Face transformers decodes (its tokens exactly, "
                                "even an image token or a padded id that decodes to nothing)."));
  // A setting of the app: kept across starts; panes and the sweep use it.
  const int saved = m_logitsPolicy->findData(QSettings().value(kLogitsPolicyKey).toString());
  m_logitsPolicy->setCurrentIndex(std::max(0, saved));
  connect(m_logitsPolicy, &QComboBox::currentIndexChanged, this,
          [this] { QSettings().setValue(kLogitsPolicyKey, m_logitsPolicy->currentData().toString()); });
  auto* form = new QFormLayout(body);
  form->setContentsMargins(12, 0, 0, 0);
  form->addRow(tr("Seed"), m_seed);
  form->addRow(tr("Temperature"), m_temperature);
  form->addRow(tr("Max new tokens"), m_maxTokens);
  form->addRow(tr("Logits"), m_logitsPolicy);
  body->setVisible(false);
  connect(toggle, &QToolButton::toggled, this, [toggle, body](bool on) {
    body->setVisible(on);
    toggle->setArrowType(on ? Qt::DownArrow : Qt::RightArrow);
  });
  auto* layout = new QVBoxLayout(box);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->addWidget(toggle);
  layout->addWidget(body);
  return box;
}

void ComparisonLab::fillModelPickers() {
  const QString demo = demoRoot();
  auto fill = [&](QComboBox* combo, const QString& key, const QString& demoSub, const QString& demoName,
                  bool allowNone, const QString& current) {
    const QSignalBlocker block(combo);
    combo->clear();
    if (allowNone) {
      combo->addItem(tr("None"), QString());
    }
    if (!demo.isEmpty() && QFileInfo(demo + QLatin1Char('/') + demoSub + QStringLiteral("/config.json")).exists()) {
      combo->addItem(demoName, QDir::cleanPath(demo + QLatin1Char('/') + demoSub));
    }
    for (const QString& path : recentList(key)) {
      if (combo->findData(path) < 0) {
        combo->addItem(QFileInfo(path).fileName(), path);
        combo->setItemData(combo->count() - 1, path, Qt::ToolTipRole);
      }
    }
    combo->addItem(tr("Open HF snapshot folder…"), QStringLiteral("<open>"));
    // A refill (a new model) keeps showing what is loaded.
    if (!current.isEmpty()) {
      if (combo->findData(current) < 0) {
        combo->insertItem(combo->count() - 1, QFileInfo(current).fileName(), current);
      }
      combo->setCurrentIndex(combo->findData(current));
    }
  };
  fill(m_modelPicker, QStringLiteral("models"), QStringLiteral("vlm"), tr("Demo VLM"), false, m_modelPath);
  fill(m_judgePicker, QStringLiteral("judges"), QStringLiteral("guard"), tr("Demo guard"), true, m_judgePath);
  fill(m_rewardPicker, QStringLiteral("rewards"), QStringLiteral("reward"), tr("Demo reward model"), true,
       m_rewardPath);
  auto hook = [this](QComboBox* combo, void (ComparisonLab::*open)(const QString&)) {
    connect(combo, &QComboBox::activated, this, [this, combo, open](int index) {
      QString path = combo->itemData(index).toString();
      if (path == QStringLiteral("<open>")) {
        path = QFileDialog::getExistingDirectory(this, tr("Open Hugging Face snapshot folder"));
        if (path.isEmpty()) {
          return;
        }
      }
      (this->*open)(path);
    });
  };
  if (m_modelPicker->property("hooked").toBool()) {
    return;
  }
  m_modelPicker->setProperty("hooked", true);
  hook(m_modelPicker, &ComparisonLab::openModel);
  hook(m_judgePicker, &ComparisonLab::openJudge);
  hook(m_rewardPicker, &ComparisonLab::openReward);
}

void ComparisonLab::addRecent(const QString& key, const QString& value) {
  QSettings settings;
  QStringList list = settings.value(QStringLiteral("recent/") + key).toStringList();
  list.removeAll(value);
  list.prepend(value);
  while (list.size() > kMaxRecent) {
    list.removeLast();
  }
  settings.setValue(QStringLiteral("recent/") + key, list);
}

void ComparisonLab::error(const QString& text) {
  Q_EMIT message(MessageBar::Error, text);
}

void ComparisonLab::openModel(const QString& dir) {
  if (dir.isEmpty()) {
    return;
  }
  stopAll();
  m_modelPath = QDir::cleanPath(dir);
  m_modelLabel->setText(tr("Loading %1…").arg(QFileInfo(dir).fileName()));
  m_loadingModel = true;
  m_service->openModel(m_modelPath);
}

void ComparisonLab::openJudge(const QString& dir) {
  m_judgePath = dir.isEmpty() ? QString() : QDir::cleanPath(dir);
  m_service->loadJudge(m_judgePath);
  if (!m_judgePath.isEmpty()) {
    if (m_judgePicker->findData(m_judgePath) < 0) {
      m_judgePicker->insertItem(m_judgePicker->count() - 1, QFileInfo(m_judgePath).fileName(), m_judgePath);
    }
    m_judgePicker->setCurrentIndex(m_judgePicker->findData(m_judgePath));
  }
}

void ComparisonLab::openReward(const QString& dir) {
  m_rewardPath = dir.isEmpty() ? QString() : QDir::cleanPath(dir);
  m_service->loadReward(m_rewardPath);
  if (!m_rewardPath.isEmpty()) {
    if (m_rewardPicker->findData(m_rewardPath) < 0) {
      m_rewardPicker->insertItem(m_rewardPicker->count() - 1, QFileInfo(m_rewardPath).fileName(), m_rewardPath);
    }
    m_rewardPicker->setCurrentIndex(m_rewardPicker->findData(m_rewardPath));
  }
}

void ComparisonLab::requestAdapter(const QString& dir, std::function<void()> then) {
  m_adapterRequests.push_back({dir, std::move(then)});
  m_service->loadAdapter(dir);
}

void ComparisonLab::loadAdapter(const QString& dir) {
  const QString clean = dir.isEmpty() ? QString() : QDir::cleanPath(dir);
  // Answers shown or on their way now come from the old choice: they run again once the
  // adapter is in (requests run in order on the worker, so the re-runs see it).
  QVector<QPointer<ComparisonPane>> rerun;
  for (ComparisonPane* p : panes()) {
    if (p->isRunning() || p->answer()) {
      rerun.push_back(p);
    }
  }
  requestAdapter(clean, [this, clean, rerun] {
    for (ComparisonPane* p : panes()) {
      p->setAdapter(clean);
    }
    if (!m_lastPrompt.isEmpty() && !m_imageBytes.isEmpty()) {
      for (const QPointer<ComparisonPane>& p : rerun) {
        if (p) {
          runPane(p);
        }
      }
    }
    Q_EMIT message(MessageBar::Information, clean.isEmpty() ? tr("Adapter removed: the panes use the base model")
                                                            : tr("Adapter loaded: the panes use %1").arg(clean));
  });
}

void ComparisonLab::addAdapter(const QString& dir) {
  const QString clean = QDir::cleanPath(dir);
  requestAdapter(clean, [this, clean] {
    Q_EMIT message(MessageBar::Information,
                   tr("Adapter loaded: %1 (pick it in a pane's model list)").arg(clean));
  });
}

void ComparisonLab::compareWithAdapter(const QString& dir, int layer, bool sweep) {
  const QString clean = QDir::cleanPath(dir);
  requestAdapter(clean, [this, clean, layer, sweep] {
    const int layers = m_service->model() ? m_service->model()->layers : m_slider->maximum();
    int l = layer > 0 ? layer : m_slider->value();
    if (layer < 0) {
      l = std::min(8, layers / 3);  // early: ICET-8 of 24 layers, where the base model is weakest
    }
    l = std::clamp(l, 1, std::max(1, layers));
    // The base pane at that layer: one already there, else the slider's pane moved to it.
    auto all = panes();
    ComparisonPane* base = nullptr;
    for (qsizetype i = 1; i < all.size() && base == nullptr; ++i) {
      if (all[i]->adapter().isEmpty() && all[i]->layer() == l) {
        base = all[i];
      }
    }
    if (base == nullptr) {
      base = all.size() > 1 ? all[1] : addPane(l);
      base->setAdapter(QString());
      base->setLayer(l);
      base->clearAnswer();
    }
    if (base == panes().value(1)) {
      const QSignalBlocker block(m_slider);  // the slider shows the exit pane's layer
      m_slider->setValue(l);
      updateSliderLabel();
    }
    // The aligned pane right after it (reused when the same comparison is asked again).
    const int index = m_paneSplitter->indexOf(base) + 1;
    auto* next = qobject_cast<ComparisonPane*>(m_paneSplitter->widget(index));
    ComparisonPane* aligned = next != nullptr && next->adapter() == clean && next->layer() == l
                                  ? next
                                  : addPane(l, clean, index);
    if (!m_imageBytes.isEmpty() && !prompt().isEmpty()) {
      for (ComparisonPane* p : {panes().front(), base, aligned}) {
        if (p != base && p != aligned && p->answer()) {
          continue;  // the default pane keeps a finished answer
        }
        runPane(p);
      }
      if (sweep) {
        runSweep();
      }
    }
    Q_EMIT message(MessageBar::Information,
                   tr("Before and after at ICET-%1: base model next to %2").arg(l).arg(clean));
  });
}

void ComparisonLab::showBeforeAfter(const QString& dir) {
  // A harmful request: the early exit complies, the aligned adapter should refuse.
  const int row = firstHarmfulExample();
  if (row >= 0) {
    openGalleryExample(row);
  }
  auto all = panes();
  while (all.size() > 2) {  // a clean stage: default pane, slider pane, and the new one
    removePane(all.takeLast());
  }
  compareWithAdapter(dir, -1, true);
}

QWidget* ComparisonLab::buildDemoBanner() {
  auto* banner = new QFrame(this);
  banner->setFrameShape(QFrame::StyledPanel);
  m_demoBanner = banner;
  m_demoBanner->setObjectName(QStringLiteral("DemoBanner"));
  m_demoBanner->setAccessibleName(tr("Demo"));
  auto* text = new QLabel(tr("<b>Demo world.</b> One image and one request, answered with the image features of "
                             "the default encoder layer (left) and of an early layer (right): early exits "
                             "comply. Pick a prompt, move the slider, or show the L-PPO fix."),
                          m_demoBanner);
  text->setObjectName(QStringLiteral("DemoText"));
  text->setWordWrap(true);
  auto* close = new QToolButton(m_demoBanner);
  close->setObjectName(QStringLiteral("DemoClose"));
  close->setIcon(QIcon(QStringLiteral(":/icons/close.svg")));
  close->setAutoRaise(true);
  close->setToolTip(tr("Hide the demo banner (Run ▸ Start the Demo shows it again)"));
  close->setAccessibleName(tr("Hide the demo banner"));
  connect(close, &QToolButton::clicked, m_demoBanner, &QWidget::hide);

  // The prompt picker: the demo's harmful request and a benign question about the same image.
  m_demoHarmful = new QPushButton(tr("Harmful request"), m_demoBanner);
  m_demoHarmful->setObjectName(QStringLiteral("DemoHarmfulPrompt"));
  m_demoBenign = new QPushButton(tr("Benign question"), m_demoBanner);
  m_demoBenign->setObjectName(QStringLiteral("DemoBenignPrompt"));
  auto* group = new QButtonGroup(m_demoBanner);
  for (QPushButton* b : {m_demoHarmful, m_demoBenign}) {
    b->setCheckable(true);
    b->setAccessibleName(b->text());
    group->addButton(b);
  }
  connect(m_demoHarmful, &QPushButton::clicked, this, [this] { pickDemoPrompt(true); });
  connect(m_demoBenign, &QPushButton::clicked, this, [this] { pickDemoPrompt(false); });

  m_showFix = new QPushButton(QIcon(QStringLiteral(":/icons/safe.svg")), tr("Show the fix"), m_demoBanner);
  m_showFix->setObjectName(QStringLiteral("ShowFixButton"));
  m_showFix->setAccessibleName(m_showFix->text());
  m_showFix->setDefault(true);  // drawn as the one thing to click next
  m_showFix->setEnabled(false);
  connect(m_showFix, &QPushButton::clicked, this, &ComparisonLab::showDemoFix);

  auto* top = new QHBoxLayout;
  top->addWidget(text, 1);
  top->addWidget(close, 0, Qt::AlignTop);
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(new QLabel(tr("Prompt:"), m_demoBanner));
  buttons->addWidget(m_demoHarmful);
  buttons->addWidget(m_demoBenign);
  buttons->addStretch(1);
  buttons->addWidget(m_showFix);
  auto* layout = new QVBoxLayout(m_demoBanner);
  layout->setContentsMargins(8, 4, 4, 4);
  layout->setSpacing(4);
  layout->addLayout(top);
  layout->addLayout(buttons);
  m_demoBanner->hide();  // startDemo() shows it
  return m_demoBanner;
}

QString ComparisonLab::demoAdapter(const QString& root) {
  if (root.isEmpty()) {
    return QString();
  }
  const QString dir = QDir::cleanPath(root + QStringLiteral("/adapter"));
  const bool complete = QFileInfo(dir + QStringLiteral("/adapter_config.json")).isFile() &&
                        QFileInfo(dir + QStringLiteral("/adapter_model.safetensors")).isFile();
  return complete ? dir : QString();
}

bool ComparisonLab::startDemo(const QString& root) {
  m_demoExample = firstHarmfulExample();
  if (root.isEmpty() || m_demoExample < 0) {
    return false;
  }
  m_demoRoot = QDir::cleanPath(root);
  // The benign question: a description (answerable for any demo scene, so for the harmful
  // example's image too), else the gallery's first benign prompt.
  int benign = -1;
  for (int i = 0; i < m_gallery->count(); ++i) {
    const QListWidgetItem* item = m_gallery->item(i);
    if (item->data(Qt::UserRole + 2).toBool()) {
      continue;
    }
    if (benign < 0) {
      benign = i;
    }
    if (item->data(Qt::UserRole + 3).toString() == QStringLiteral("describe")) {
      benign = i;
      break;
    }
  }
  m_demoBenignPrompt = benign < 0 ? QString() : m_gallery->item(benign)->data(Qt::UserRole + 1).toString();
  const QString harmful = m_gallery->item(m_demoExample)->data(Qt::UserRole + 1).toString();
  m_demoHarmful->setToolTip(tr("“%1”\nA harmful request of the demo world: its compliant answers hold only "
                               "[unsafe step] placeholders.")
                                .arg(harmful));
  m_demoBenign->setToolTip(tr("“%1”").arg(m_demoBenignPrompt));
  m_demoBenign->setEnabled(!m_demoBenignPrompt.isEmpty());
  const QString adapter = demoAdapter(m_demoRoot);
  m_showFix->setEnabled(!adapter.isEmpty());
  m_showFix->setToolTip(
      adapter.isEmpty()
          ? tr("No demo adapter in %1/adapter: train one with `icet train --config %1/lppo.json` and copy "
               "the run's adapter/ folder there")
                .arg(m_demoRoot)
          : tr("Load the demo L-PPO adapter (%1) into a new pane beside the early-layer pane: same layer, "
               "same prompt")
                .arg(adapter));

  // A clean stage: the default pane and the slider's pane, both on the base model.
  auto all = panes();
  while (all.size() > 2) {
    removePane(all.takeLast());
  }
  for (ComparisonPane* p : all) {
    p->setAdapter(QString());
  }
  m_demoHarmful->setChecked(true);
  openGalleryExample(m_demoExample);
  m_demoBanner->show();
  // Once the model is in: the default pane at the default layer and the slider's pane at an
  // early one answer.
  whenModelReady([this] {
    const auto staged = panes();
    if (staged.size() < 2 || !m_service->model()) {
      return;
    }
    const int defaultLayer = m_service->model()->defaultLayer;
    {
      const QSignalBlocker block(m_slider);
      m_slider->setValue(earlyLayer(defaultLayer));
      updateSliderLabel();
    }
    staged[0]->setLayer(defaultLayer);
    staged[1]->setLayer(m_slider->value());
    if (!prompt().isEmpty() && !m_imageBytes.isEmpty()) {
      runAll();
      runSweep();  // every layer's verdict on the chart: where the early exits turn unsafe
    }
  });
  return true;
}

void ComparisonLab::pickDemoPrompt(bool harmful) {
  if (m_demoExample < 0) {
    return;
  }
  (harmful ? m_demoHarmful : m_demoBenign)->setChecked(true);
  if (m_imageBytes.isEmpty()) {
    openGalleryExample(m_demoExample);  // the demo's image, with the harmful prompt for now
  }
  setPrompt(harmful ? m_gallery->item(m_demoExample)->data(Qt::UserRole + 1).toString() : m_demoBenignPrompt);
  if (m_service->hasModel() && !m_loadingModel) {
    runAll();  // while the model loads, startDemo's run picks the new prompt up
    runSweep();
  }
}

void ComparisonLab::showDemoFix() {
  const QString root = m_demoRoot.isEmpty() ? demoRoot() : m_demoRoot;
  const QString adapter = demoAdapter(root);
  if (adapter.isEmpty()) {
    error(tr("No demo adapter in %1/adapter (train one: icet train --config models/demo/lppo.json)").arg(root));
    return;
  }
  // The adapter fits the demo VLM only: open that first if another model is in (requests run
  // in order on the worker, so the adapter loads into it).
  const QString vlm = QDir::cleanPath(root + QStringLiteral("/vlm"));
  if (m_modelPath != vlm) {
    openModel(vlm);
  }
  if ((m_imageBytes.isEmpty() || prompt().isEmpty()) && m_demoExample >= 0) {
    m_demoHarmful->setChecked(true);
    openGalleryExample(m_demoExample);
  }
  compareWithAdapter(adapter, 0, true);  // beside the base pane at the slider's layer; both sweeps
}

void ComparisonLab::whenModelReady(std::function<void()> then) {
  if (m_service->hasModel() && !m_loadingModel && m_service->model()->path == m_modelPath) {
    then();
    return;
  }
  auto opened = std::make_shared<QMetaObject::Connection>();
  auto failed = std::make_shared<QMetaObject::Connection>();
  *opened = connect(m_service, &ModelService::modelOpened, this, [this, opened, failed, then] {
    disconnect(*opened);
    disconnect(*failed);
    QTimer::singleShot(0, this, then);  // after onModelOpened has reset the panes
  });
  *failed = connect(m_service, &ModelService::failed, this, [opened, failed](const QString& context) {
    if (context == QStringLiteral("model")) {
      disconnect(*opened);
      disconnect(*failed);
    }
  });
}

void ComparisonLab::onAdapterChanged(const QString& dir) {
  std::function<void()> then;
  if (!m_adapterRequests.isEmpty()) {
    then = m_adapterRequests.takeFirst().second;
  }
  updateModelLabel();
  const QStringList loaded = adapters();
  for (ComparisonPane* p : panes()) {
    p->setAdapterChoices(loaded);
  }
  // Sweep answers of an adapter that changed (reloaded or unloaded) are stale; base ones stay.
  const auto stale = std::remove_if(m_sweep.begin(), m_sweep.end(), [&dir](const Answer& a) {
    return !a.adapter.isEmpty() && (dir.isEmpty() || a.adapter == dir);
  });
  if (stale != m_sweep.end()) {
    m_sweep.erase(stale, m_sweep.end());
    showSweep();
  }
  if (then) {
    then();
  }
  Q_EMIT adapterChanged(dir);
}

QString ComparisonLab::adapterPath() const {
  return m_service->model() ? m_service->model()->adapter : QString();
}

QStringList ComparisonLab::adapters() const {
  return m_service->model() ? m_service->model()->adapters : QStringList();
}

void ComparisonLab::updateModelLabel() {
  const auto& info = m_service->model();
  if (!info) {
    return;
  }
  QString text = tr("%1 · %2 encoder layers · default ICET-%3 · %4")
                     .arg(info->modelId)
                     .arg(info->layers)
                     .arg(info->defaultLayer)
                     .arg(info->device);
  QString tip = info->path + QStringLiteral("\n") + info->weightsHash;
  if (!info->adapter.isEmpty()) {
    text += tr(" · LoRA adapter %1").arg(adapterName(info->adapter));
    tip += tr("\nLoRA adapter: %1").arg(info->adapter);
  }
  m_modelLabel->setText(text);
  m_modelLabel->setToolTip(tip);
}

void ComparisonLab::onModelOpened(const ModelInfo& info) {
  m_loadingModel = false;
  m_defaultLayer = info.defaultLayer;
  {
    const QSignalBlocker block(m_slider);
    m_slider->setRange(1, info.layers);
    static_cast<LayerSlider*>(m_slider)->setDefaultLayer(info.defaultLayer);
    m_slider->setValue(earlyLayer(info.defaultLayer));
  }
  const auto panes = this->panes();
  QStringList coming;  // adapters requested for the new session (a bundle's), kept by their panes
  for (const auto& r : m_adapterRequests) {
    coming << r.first;
  }
  for (ComparisonPane* p : panes) {
    p->setLayerRange(info.layers, info.defaultLayer);
    p->clearAnswer();
    if (!coming.contains(p->adapter())) {
      p->setAdapter(QString());  // a new session holds no adapter
    }
    p->setAdapterChoices({});
  }
  if (!panes.isEmpty()) {
    panes[0]->setLayer(info.defaultLayer);
  }
  if (panes.size() > 1) {
    panes[1]->setLayer(m_slider->value());
  }
  m_sweepChart->clear();
  m_sweepChart->setBands(layerBands(info.layers));
  m_sweepChart->setXRange(0.5, info.layers + 0.5);
  m_sweep.clear();
  updateSliderLabel();
  updateModelLabel();
  {
    addRecent(QStringLiteral("models"), info.path);
    QSettings().setValue(QStringLiteral("model/last"), info.path);
    if (m_modelPicker->findData(info.path) < 0) {
      fillModelPickers();
    }
    m_modelPicker->setCurrentIndex(std::max(0, m_modelPicker->findData(info.path)));
    if (!m_imageBytes.isEmpty()) {
      ++m_imageRequests;
      m_service->setImage(m_imageBytes, m_imageName);  // a new session has no cached image
    }
  }
  Q_EMIT message(MessageBar::Information, tr("Model ready: %1").arg(info.modelId));
  Q_EMIT modelChanged(info);
}

void ComparisonLab::onFailed(const QString& context, const QString& text, quint64 id) {
  if (context == QStringLiteral("model")) {
    m_loadingModel = false;
    m_modelLabel->setText(tr("No model loaded"));
    error(tr("Could not open the model: %1").arg(text));
  } else if (context == QStringLiteral("image")) {
    if (--m_imageRequests == 0 && m_imageBytes != m_goodImageBytes) {
      // The model still holds the last good image: show and run that one, not the bad file.
      m_imageBytes = m_goodImageBytes;
      m_imageName = m_goodImageName;
      showPreview(m_imageBytes);
      error(m_imageBytes.isEmpty() ? tr("Could not use the image: %1").arg(text)
                                   : tr("Could not use the image: %1 (kept the previous image)").arg(text));
    } else {
      error(tr("Could not use the image: %1").arg(text));
    }
  } else if (context == QStringLiteral("judge")) {
    m_judgePath.clear();
    m_judgePicker->setCurrentIndex(0);
    error(tr("Could not load the judge: %1").arg(text));
  } else if (context == QStringLiteral("reward")) {
    m_rewardPath.clear();
    m_rewardPicker->setCurrentIndex(0);
    error(tr("Could not load the reward model: %1").arg(text));
  } else if (context == QStringLiteral("adapter")) {
    if (!m_adapterRequests.isEmpty()) {
      m_adapterRequests.removeFirst();  // nothing changed: the shown answers stay valid
    }
    error(tr("Could not load the adapter: %1").arg(text));
  } else if (context == QStringLiteral("sweep")) {
    if (m_sweepHandle && m_sweepHandle->id == id) {
      m_sweepHandle.reset();
      m_sweepButton->setEnabled(true);
      error(tr("Sweep failed: %1").arg(text));
      Q_EMIT sweepFinished();
    }
  } else {
    error(text);
  }
}

bool ComparisonLab::openImageFile(const QString& path) {
  const QFileInfo info(path);
  if (info.isDir()) {
    error(tr("%1 is a folder, not an image").arg(path));
    return false;
  }
  QFile file(path);
  if (!file.open(QIODevice::ReadOnly)) {
    error(tr("Cannot read the image %1: %2").arg(path, file.errorString()));
    return false;
  }
  // A file that is no image at all (by content and name) is refused before it replaces the
  // current image; a damaged image file goes on to the core decoder, which says what is wrong.
  const QMimeType type = QMimeDatabase().mimeTypeForFileNameAndData(path, &file);
  if (!type.name().startsWith(QStringLiteral("image/"))) {
    error(tr("%1 is not an image (%2): open, drop or paste a PNG, JPEG, BMP, TIFF or WebP file")
              .arg(info.fileName(), type.comment().isEmpty() ? type.name() : type.comment()));
    return false;
  }
  addRecent(QStringLiteral("images"), QFileInfo(path).absoluteFilePath());
  setImageBytes(file.readAll(), path);
  return true;
}

void ComparisonLab::setImage(const QImage& image, const QString& name) {
  if (image.isNull()) {
    error(tr("The clipboard or drop held no usable image"));
    return;
  }
  QByteArray png;
  QBuffer buffer(&png);
  buffer.open(QIODevice::WriteOnly);
  image.convertToFormat(QImage::Format_RGB888).save(&buffer, "PNG");
  setImageBytes(png, name);
}

void ComparisonLab::setImageBytes(const QByteArray& bytes, const QString& name) {
  m_imageBytes = bytes;
  m_imageName = name;
  // The preview decodes with Qt on a pool thread; the model decodes with the core's checked
  // decoder on the worker, which reports corrupt files.
  showPreview(bytes);
  for (ComparisonPane* p : panes()) {
    p->clearAnswer();
  }
  m_sweep.clear();
  // While a model loads, onModelOpened sends the image to the new session.
  if (m_service->hasModel() && !m_loadingModel) {
    ++m_imageRequests;
    m_service->setImage(bytes, name);
  }
}

namespace {

// A preview-sized image, or a null one for data Qt cannot decode or above the core's limits.
// Runs on a pool thread. The header is read first, so a decompression bomb is refused before
// any pixel buffer; JPEG decodes straight at the preview's scale.
QImage decodePreview(const QByteArray& bytes, QSize box) {
  QBuffer buffer;
  buffer.setData(bytes);
  buffer.open(QIODevice::ReadOnly);
  QImageReader reader(&buffer);
  const QSize size = reader.size();
  const vision::ImageLimits limits;
  if (!size.isValid() || size.width() > limits.max_side || size.height() > limits.max_side ||
      static_cast<int64_t>(size.width()) * size.height() > limits.max_pixels) {
    return {};
  }
  // Qt's default allocation limit (128 MB) is below the 8192 x 8192 the model accepts.
  reader.setAllocationLimit(static_cast<int>(limits.max_pixels * 4 / (1 << 20)) + 1);
  reader.setScaledSize(size.scaled(box, Qt::KeepAspectRatio).expandedTo(QSize(1, 1)));
  return reader.read();
}

}  // namespace

void ComparisonLab::showPreview(const QByteArray& bytes) {
  const quint64 ticket = ++m_previewTicket;
  if (bytes.isEmpty()) {
    updatePreview(QImage());
    return;
  }
  // The watcher is the lab's child: if the lab goes first, the result is dropped with it.
  auto* watcher = new QFutureWatcher<QImage>(this);
  connect(watcher, &QFutureWatcher<QImage>::finished, this, [this, watcher, ticket] {
    watcher->deleteLater();
    if (ticket == m_previewTicket) {
      updatePreview(watcher->result());
    }
  });
  const QSize box = m_preview->size().expandedTo(QSize(240, 180)) * m_preview->devicePixelRatioF();
  watcher->setFuture(QtConcurrent::run(decodePreview, bytes, box));
}

void ComparisonLab::updatePreview(const QImage& image) {
  if (image.isNull()) {
    m_preview->setPixmap(QPixmap());
    m_preview->setText(tr("(no preview)"));
    return;
  }
  QPixmap pixmap = QPixmap::fromImage(image.scaled(QSize(240, 180) * m_preview->devicePixelRatioF(),
                                                   Qt::KeepAspectRatio, Qt::SmoothTransformation));
  pixmap.setDevicePixelRatio(m_preview->devicePixelRatioF());
  m_preview->setPixmap(pixmap);
  m_preview->setToolTip(m_imageName);
}

void ComparisonLab::pasteFromClipboard() {
  const QMimeData* mime = QApplication::clipboard()->mimeData();
  if (mime == nullptr) {
    return;
  }
  // A copied link (a URL with text) pastes as text; copied files and image data are images.
  if (mime->hasImage() || hasLocalFiles(mime)) {
    dropImage(mime, tr("pasted image"));
  } else if (mime->hasText()) {
    m_prompt->insertPlainText(mime->text());
  } else if (canDropImage(mime)) {
    dropImage(mime, tr("pasted image"));  // says why it cannot be used
  }
}

bool ComparisonLab::canDropImage(const QMimeData* mime) {
  // Any file is taken (a non-image gets an error that says so, not a refused-drop cursor).
  return mime != nullptr && (mime->hasImage() || mime->hasUrls());
}

bool ComparisonLab::dropImage(const QMimeData* mime, const QString& name) {
  if (mime == nullptr) {
    return false;
  }
  if (mime->hasUrls() && !mime->urls().isEmpty()) {  // files win over the image data some apps add
    const QUrl url = mime->urls().front();
    if (!url.isLocalFile()) {
      error(tr("Only local image files can be opened, not %1").arg(url.toDisplayString()));
      return false;
    }
    return openImageFile(url.toLocalFile());
  }
  if (mime->hasImage()) {
    const QImage image = qvariant_cast<QImage>(mime->imageData());
    setImage(image, name.isEmpty() ? tr("dropped image") : name);
    return !image.isNull();
  }
  error(tr("Nothing to open here: drop an image file or image data"));
  return false;
}

void ComparisonLab::dragEnterEvent(QDragEnterEvent* event) {
  if (canDropImage(event->mimeData())) {
    event->acceptProposedAction();
  }
}

void ComparisonLab::dragMoveEvent(QDragMoveEvent* event) {
  if (canDropImage(event->mimeData())) {
    event->acceptProposedAction();
  }
}

void ComparisonLab::dropEvent(QDropEvent* event) {
  event->acceptProposedAction();
  dropImage(event->mimeData());
}

bool ComparisonLab::eventFilter(QObject* watched, QEvent* event) {
  const bool prompt = watched == m_prompt || watched == m_prompt->viewport();
  if (!prompt) {
    return QWidget::eventFilter(watched, event);
  }
  switch (event->type()) {
    case QEvent::DragEnter:
    case QEvent::DragMove: {
      auto* e = static_cast<QDragMoveEvent*>(event);
      if (e->mimeData()->hasUrls() || e->mimeData()->hasImage()) {
        e->acceptProposedAction();
        return true;
      }
      break;  // text: the editor inserts it
    }
    case QEvent::Drop: {
      auto* e = static_cast<QDropEvent*>(event);
      if (e->mimeData()->hasUrls() || e->mimeData()->hasImage()) {
        e->acceptProposedAction();
        dropImage(e->mimeData());
        return true;
      }
      break;
    }
    case QEvent::ShortcutOverride: {
      // Ctrl+V with an image (or a file) on the clipboard: leave it to the window's Paste
      // action instead of the editor, which could only paste text.
      auto* e = static_cast<QKeyEvent*>(event);
      const QMimeData* mime = QApplication::clipboard()->mimeData();
      if (e->matches(QKeySequence::Paste) && mime != nullptr && (mime->hasImage() || hasLocalFiles(mime))) {
        e->ignore();
        return true;
      }
      break;
    }
    default: break;
  }
  return QWidget::eventFilter(watched, event);
}

void ComparisonLab::setPrompt(const QString& prompt) {
  m_prompt->setPlainText(prompt);
}

QString ComparisonLab::prompt() const {
  return m_prompt->toPlainText().trimmed();
}

bool ComparisonLab::loadGallery(const QString& path) {
  eval::PromptSet set;
  try {
    set = eval::load_prompt_set(path.toStdString());  // JSONL or CSV; errors name file and line
  } catch (const std::exception& e) {
    error(tr("Cannot read the prompt set: %1").arg(QString::fromUtf8(e.what())));
    return false;
  }
  m_gallery->clear();
  for (const auto& item : set.items) {
    const QString image = QString::fromStdString(set.image_path(item).string());
    const QString text = QString::fromStdString(item.prompt);
    auto* row = new QListWidgetItem(QIcon(image), QString::fromStdString(item.id));
    row->setData(Qt::UserRole, image);
    row->setData(Qt::UserRole + 1, text);
    row->setData(Qt::UserRole + 2, item.harmful);
    row->setData(Qt::UserRole + 3, QString::fromStdString(item.task));
    row->setToolTip((item.harmful ? tr("[harmful] ") : QString()) + text);
    m_gallery->addItem(row);
  }
  return true;
}

int ComparisonLab::galleryCount() const {
  return m_gallery->count();
}

void ComparisonLab::openGalleryExample(int row) {
  QListWidgetItem* item = m_gallery->item(row);
  if (item == nullptr) {
    return;
  }
  m_gallery->setCurrentRow(row);  // the example on show stays marked
  setPrompt(item->data(Qt::UserRole + 1).toString());
  openImageFile(item->data(Qt::UserRole).toString());
}

generate::SamplingParams ComparisonLab::samplingParams() const {
  generate::SamplingParams p;
  p.max_new_tokens = m_maxTokens->value();
  p.seed = static_cast<uint64_t>(m_seed->value());
  if (m_temperature->value() > 0.0) {
    p.do_sample = true;
    p.temperature = m_temperature->value();
  }
  p.logits_policy = generate::parse_logits_policy(m_logitsPolicy->currentData().toString().toStdString())
                        .value_or(generate::LogitsPolicy::clean);
  return p;
}

void ComparisonLab::setSamplingParams(const generate::SamplingParams& p) {
  m_maxTokens->setValue(static_cast<int>(p.max_new_tokens));
  m_seed->setValue(static_cast<int>(p.seed.value_or(0) % static_cast<uint64_t>(std::numeric_limits<int>::max())));
  m_temperature->setValue(p.do_sample ? p.temperature : 0.0);
  m_logitsPolicy->setCurrentIndex(
      m_logitsPolicy->findData(QString::fromStdString(generate::logits_policy_name(p.logits_policy))));
}

QVector<ComparisonPane*> ComparisonLab::panes() const {
  QVector<ComparisonPane*> out;
  for (int i = 0; i < m_paneSplitter->count(); ++i) {
    if (auto* p = qobject_cast<ComparisonPane*>(m_paneSplitter->widget(i))) {
      out.push_back(p);
    }
  }
  return out;
}

ComparisonPane* ComparisonLab::addPane(int layer, const QString& adapter, int index) {
  auto* pane = new ComparisonPane(m_service, m_paneSplitter);
  if (const auto& info = m_service->model()) {
    pane->setLayerRange(info->layers, info->defaultLayer);
  }
  pane->setLayer(layer);
  pane->setAdapterChoices(adapters());
  pane->setAdapter(adapter);
  pane->setPresentationMode(m_presentation);
  m_paneSplitter->insertWidget(index, pane);
  m_paneScroll->updateGeometry();  // its size hints follow the panes'
  connect(pane, &ComparisonPane::finished, this, &ComparisonLab::onPaneFinished);
  connect(pane, &ComparisonPane::regenerateRequested, this, [this, pane] { runPane(pane); });
  connect(pane, &ComparisonPane::removeRequested, this, [this, pane] { removePane(pane); });
  connect(pane, &ComparisonPane::layerEdited, this, [this, pane] {
    if (!m_lastPrompt.isEmpty()) {
      runPane(pane);
    }
  });
  connect(pane, &ComparisonPane::adapterEdited, this, [this, pane] {
    if (!m_lastPrompt.isEmpty()) {
      runPane(pane);
    }
  });
  connect(pane, &ComparisonPane::adapterFolderRequested, this, [this, pane] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("LoRA adapter folder (PEFT)"));
    if (dir.isEmpty()) {
      return;
    }
    const QString clean = QDir::cleanPath(dir);
    const QPointer<ComparisonPane> target = pane;
    requestAdapter(clean, [this, target, clean] {
      if (target) {
        target->setAdapter(clean);
        if (!m_lastPrompt.isEmpty()) {
          runPane(target);
        }
      }
    });
  });
  return pane;
}

void ComparisonLab::removePane(ComparisonPane* pane) {
  if (pane == nullptr || pane->isBaseline()) {
    return;
  }
  pane->stop();
  pane->hide();
  pane->deleteLater();
  pane->setParent(nullptr);
  m_paneScroll->updateGeometry();
}

void ComparisonLab::runPane(ComparisonPane* pane) {
  if (!m_service->hasModel() && m_modelPath.isEmpty()) {
    error(tr("Open a model first (Models ▸ VLM)"));
    return;
  }
  if (m_imageBytes.isEmpty()) {
    error(tr("Choose an image first (open, drop, paste or pick a demo example)"));
    return;
  }
  if (prompt().isEmpty()) {
    error(tr("Type a prompt first"));
    return;
  }
  m_lastPrompt = prompt();
  pane->run(m_lastPrompt, samplingParams());
}

void ComparisonLab::runAll() {
  for (ComparisonPane* p : panes()) {
    runPane(p);
  }
}

void ComparisonLab::stopAll() {
  m_debounce->stop();
  for (ComparisonPane* p : panes()) {
    p->stop();
  }
  if (m_sweepHandle) {
    m_sweepHandle->requestCancel();
  }
}

bool ComparisonLab::isBusy() const {
  if (m_sweepHandle) {
    return true;
  }
  for (ComparisonPane* p : panes()) {
    if (p->isRunning()) {
      return true;
    }
  }
  return false;
}

void ComparisonLab::onSliderMoved() {
  const auto all = panes();
  if (all.size() < 2) {
    return;
  }
  ComparisonPane* exitPane = all[1];
  exitPane->setLayer(m_slider->value());
  if (!m_lastPrompt.isEmpty()) {
    runPane(exitPane);  // cancels the pane's running generation first
  }
}

void ComparisonLab::updateSliderLabel() {
  const int l = m_slider->value();
  QString text = tr("ICET-%1").arg(l);
  if (l == m_defaultLayer) {
    text += tr(" (default)");
  } else if (m_defaultLayer > 0) {
    text += tr("  · default %1").arg(m_defaultLayer);
  }
  m_sliderLabel->setText(text);
  m_slider->setAccessibleDescription(text);
}

void ComparisonLab::onPaneFinished() {
  const auto all = panes();
  if (all.isEmpty()) {
    return;
  }
  const QString base = all[0]->answer() ? all[0]->text() : QString();
  for (int i = 1; i < all.size(); ++i) {
    all[i]->setDiffBase(base);
  }
  if (!isBusy()) {
    Q_EMIT allFinished();
  }
}

void ComparisonLab::runSweep() {
  if (!m_service->hasModel() && m_modelPath.isEmpty()) {
    error(tr("Open a model first"));
    return;
  }
  if (m_imageBytes.isEmpty() || prompt().isEmpty()) {
    error(tr("Choose an image and type a prompt before sweeping"));
    return;
  }
  if (m_sweepHandle) {
    m_sweepHandle->requestCancel();
  }
  const int n = m_service->model() ? m_service->model()->layers : m_slider->maximum();
  QVector<int> layers;
  for (int l = 1; l <= n; ++l) {
    layers.push_back(l);
  }
  m_sweepPrompt = prompt();
  m_sweepButton->setEnabled(false);
  // The base sweep, and the loaded adapter's as one more batched sweep on the same encoder states.
  QStringList models = {QString()};
  if (!adapterPath().isEmpty()) {
    models << adapterPath();
  }
  m_sweepHandle = m_service->sweep(m_sweepPrompt, layers, samplingParams(), models);
}

void ComparisonLab::onSweepFinished(quint64 id, const QVector<Answer>& answers) {
  if (!m_sweepHandle || m_sweepHandle->id != id) {
    return;
  }
  m_sweepHandle.reset();
  m_sweepButton->setEnabled(true);
  m_sweep = answers;
  showSweep();
  Q_EMIT sweepFinished();
}

void ComparisonLab::showSweep() {
  QStringList models;  // in sweep order: the base model, then the adapter
  for (const Answer& a : m_sweep) {
    if (!models.contains(a.adapter)) {
      models << a.adapter;
    }
  }
  m_sweepChart->clear();
  const bool overlay = models.size() > 1;
  for (const QString& model : models) {
    QVector<QPointF> unsafe;
    QVector<QPointF> reward;
    for (const Answer& a : m_sweep) {
      if (a.adapter != model) {
        continue;
      }
      const auto x = static_cast<double>(a.record.layer);
      if (a.safety.judged) {
        unsafe.push_back({x, a.safety.pUnsafe});
      }
      if (a.safety.scored) {
        reward.push_back({x, a.safety.reward});
      }
    }
    const bool base = model.isEmpty();
    const QString name = !overlay ? QString() : base ? tr(" · base") : tr(" · adapter: %1").arg(adapterName(model));
    m_sweepChart->setSeries(tr("P(unsafe)") + name, unsafe, base ? QColor(200, 40, 40) : QColor(150, 60, 200), true);
    m_sweepChart->setSeries(tr("reward") + name, reward, base ? QColor(40, 110, 200) : QColor(20, 150, 100), true,
                            true);
  }
}

void ComparisonLab::openSweepLayer(int layer) {
  // Every curve's answer at that layer, each in a new pane with its own model (base, adapter).
  const auto all = panes();
  const QString base = all[0]->answer() ? all[0]->text() : QString();
  for (const Answer& a : m_sweep) {
    if (a.record.layer == layer) {
      ComparisonPane* pane = addPane(layer);
      pane->showAnswer(a);
      pane->setDiffBase(base);
    }
  }
}

void ComparisonLab::setPresentationMode(bool on) {
  m_presentation = on;
  for (ComparisonPane* p : panes()) {
    p->setPresentationMode(on);
  }
}

void ComparisonLab::showExternalAnswer(const QString& promptText, const QString& answer, int layer,
                                       double reward, const QString& imagePath) {
  if (!imagePath.isEmpty() && QFileInfo(imagePath).isFile()) {
    openImageFile(imagePath);
  }
  setPrompt(promptText);
  Answer a;
  a.record.text = answer.toStdString();
  a.record.prompt = promptText.toStdString();
  a.record.layer = layer;
  a.safety.scored = true;
  a.safety.reward = reward;
  a.safety.rewardId = tr("training rollout");
  ComparisonPane* pane = addPane(layer);
  pane->showAnswer(a);
}

// ---- Session bundle -------------------------------------------------------------------------

bool ComparisonLab::exportBundle(const QString& dir) {
  if (!QDir().mkpath(dir)) {
    error(tr("Cannot create the folder %1").arg(dir));
    return false;
  }
  const QDir out(dir);
  nlohmann::json j;
  j["format"] = "icet-session";
  j["version"] = 2;  // 2: each pane's adapter
  j["model"] = {{"path", m_modelPath.toStdString()}};
  if (const auto& info = m_service->model()) {
    j["model"]["id"] = info->modelId.toStdString();
    j["model"]["weights_hash"] = info->weightsHash.toStdString();
    j["model"]["adapter"] = info->adapter.toStdString();
    nlohmann::json loaded = nlohmann::json::array();
    for (const QString& a : info->adapters) {
      loaded.push_back(a.toStdString());
    }
    j["model"]["adapters"] = loaded;
  }
  j["judge"] = m_judgePath.toStdString();
  j["reward_model"] = m_rewardPath.toStdString();
  j["prompt"] = prompt().toStdString();
  j["sampling"] = generate::to_json(samplingParams());
  j["slider_layer"] = m_slider->value();
  j["presentation"] = m_presentation;
  QString imageFile;
  if (!m_imageBytes.isEmpty()) {
    const QString suffix = QFileInfo(m_imageName).suffix().toLower();
    imageFile = QStringLiteral("image.") + (suffix.isEmpty() ? QStringLiteral("png") : suffix);
    QSaveFile f(out.filePath(imageFile));
    if (!f.open(QIODevice::WriteOnly) || f.write(m_imageBytes) != m_imageBytes.size() || !f.commit()) {
      error(tr("Cannot write %1").arg(out.filePath(imageFile)));
      return false;
    }
    j["image"] = {{"file", imageFile.toStdString()}, {"source", m_imageName.toStdString()},
                  {"hash", m_service->imageHash().toStdString()}};
  }
  nlohmann::json panesJson = nlohmann::json::array();
  QString rows;
  for (ComparisonPane* p : panes()) {
    nlohmann::json pj;
    pj["layer"] = p->layer();
    pj["baseline"] = p->isBaseline();
    pj["adapter"] = p->adapter().toStdString();
    if (auto s = p->seed()) {
      pj["seed"] = *s;
    }
    if (const auto& a = p->answer()) {
      pj["record"] = engine::to_json(a->record);
      pj["seed"] = a->record.params.seed.value_or(0);
      pj["verdict"] = {{"judged", a->safety.judged}, {"unsafe", a->safety.unsafe},
                       {"p_unsafe", a->safety.pUnsafe}, {"judge", a->safety.judgeId.toStdString()}};
      if (a->safety.scored) {
        pj["reward"] = a->safety.reward;
      }
      rows += QStringLiteral("<tr><td>ICET-%1</td><td>%2</td><td>%3</td><td>%4</td><td>%5</td><td>%6</td></tr>")
                  .arg(p->layer())
                  .arg(a->adapter.isEmpty() ? tr("base") : tr("adapter: %1").arg(adapterName(a->adapter)).toHtmlEscaped())
                  .arg(a->safety.judged ? (a->safety.unsafe ? tr("unsafe") : tr("safe")) : tr("n/a"))
                  .arg(a->safety.judged ? QString::number(a->safety.pUnsafe, 'f', 3) : QString())
                  .arg(a->safety.scored ? QString::number(a->safety.reward, 'f', 3) : QString())
                  .arg(p->text().toHtmlEscaped());
    }
    pj["text"] = p->text().toStdString();
    panesJson.push_back(pj);
  }
  j["panes"] = panesJson;
  nlohmann::json sweep = nlohmann::json::array();
  for (const Answer& a : m_sweep) {
    sweep.push_back({{"layer", a.record.layer}, {"adapter", a.adapter.toStdString()}, {"p_unsafe", a.safety.pUnsafe}, {"unsafe", a.safety.unsafe},
                     {"reward", a.safety.reward}, {"text", a.record.text}});
  }
  j["sweep"] = sweep;

  const QPixmap shot = m_paneSplitter->grab();
  shot.save(out.filePath(QStringLiteral("panes.png")), "PNG");
  const std::string text = j.dump(2);
  QSaveFile jf(out.filePath(QStringLiteral("session.json")));
  if (!jf.open(QIODevice::WriteOnly) || jf.write(text.data(), static_cast<qint64>(text.size())) < 0 ||
      !jf.commit()) {
    error(tr("Cannot write %1").arg(out.filePath(QStringLiteral("session.json"))));
    return false;
  }
  const QString html =
      QStringLiteral(
          "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ICET Studio session</title>"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
          "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
          "table{border-collapse:collapse}</style></head><body>"
          "<h1>ICET Studio session</h1><p><b>Model:</b> %1<br><b>Judge:</b> %2<br><b>Reward model:</b> %3"
          "<br><b>Prompt:</b> %4</p>%5<h2>Answers</h2><table><tr><th>layer</th><th>model</th><th>verdict</th>"
          "<th>P(unsafe)</th><th>reward</th><th>answer</th></tr>%6</table>"
          "<h2>Panes</h2><img src='panes.png' style='max-width:100%'></body></html>")
          .arg(m_modelPath.toHtmlEscaped(), m_judgePath.toHtmlEscaped(), m_rewardPath.toHtmlEscaped(),
               prompt().toHtmlEscaped(),
               imageFile.isEmpty() ? QString()
                                   : QStringLiteral("<img src='%1' style='max-height:240px'>").arg(imageFile),
               rows);
  QSaveFile hf(out.filePath(QStringLiteral("report.html")));
  if (hf.open(QIODevice::WriteOnly)) {
    hf.write(html.toUtf8());
    hf.commit();
  }
  Q_EMIT message(MessageBar::Information, tr("Session saved to %1").arg(dir));
  return true;
}

bool ComparisonLab::openBundle(const QString& dir) {
  const QString file = QDir(dir).filePath(QStringLiteral("session.json"));
  try {
    // Everything is read and checked before anything changes: a bad bundle leaves the lab as it was.
    const SessionBundle b = read_session_bundle(dir);
    const QByteArray image = read_session_image(dir, b);
    stopAll();
    // Requests queue on the one worker in this order: model, judge, reward, image, answers.
    const bool reopened = !b.modelPath.isEmpty() && (b.modelPath != m_modelPath || !m_service->hasModel());
    if (reopened) {
      openModel(b.modelPath);
    }
    if (b.judgePath != m_judgePath) {
      openJudge(b.judgePath);
    }
    if (b.rewardPath != m_rewardPath) {
      openReward(b.rewardPath);
    }
    // The adapters the answers were made with (a reopened model starts without any): every
    // pane's (version 1 bundles: the model's, for all panes), the model's current one last.
    const QString current = b.currentAdapter;
    QStringList paneAdapters;
    QStringList wanted;
    for (const SessionBundle::Pane& pane : b.panes) {
      const QString a = pane.adapter.value_or(current);
      paneAdapters << a;
      if (!a.isEmpty() && a != current && !wanted.contains(a)) {
        wanted << a;
      }
    }
    QStringList loaded = reopened ? QStringList() : adapters();
    const QString active = reopened ? QString() : adapterPath();
    if (current.isEmpty() && !active.isEmpty()) {
      requestAdapter(QString(), {});  // the bundle had none current: nothing to overlay on the sweep
      loaded.clear();
    } else if (!current.isEmpty() && current != active) {
      wanted << current;  // loaded last, so it is the current one again
    }
    for (const QString& a : wanted) {
      if (!loaded.contains(a) || a == current) {
        requestAdapter(a, {});
      }
    }
    setPrompt(b.prompt);
    if (b.sampling) {
      setSamplingParams(*b.sampling);
    }
    if (!b.imageFile.isEmpty()) {
      setImageBytes(image, b.imageSource);
    }
    // Panes: same count, layers, seeds and adapters as saved.
    auto have = panes();
    const auto saved = static_cast<qsizetype>(b.panes.size());
    while (have.size() > std::max<qsizetype>(2, saved)) {
      removePane(have.back());
      have.pop_back();
    }
    while (have.size() < saved) {
      have.push_back(addPane(1));
    }
    for (qsizetype i = 0; i < saved; ++i) {
      const SessionBundle::Pane& pane = b.panes[static_cast<size_t>(i)];
      ComparisonPane* p = have[i];
      p->setLayer(pane.layer);
      if (pane.seed) {
        p->setSeed(*pane.seed);
      }
      p->setProperty("pendingLayer", pane.layer);
      p->setAdapter(paneAdapters.value(i));
    }
    {
      const QSignalBlocker block(m_slider);
      m_slider->setValue(b.sliderLayer.value_or(m_slider->value()));
      updateSliderLabel();
    }
  } catch (const std::exception& e) {
    error(tr("Cannot open the session %1: %2").arg(file, QString::fromUtf8(e.what())));
    return false;
  }
  // Replay once the model is there (opening a model resets the panes' layer ranges).
  auto replay = [this] {
    for (ComparisonPane* p : panes()) {
      const QVariant l = p->property("pendingLayer");
      if (l.isValid()) {
        p->setLayer(l.toInt());
        p->setProperty("pendingLayer", QVariant());
      }
    }
    runAll();
  };
  whenModelReady(replay);
  Q_EMIT message(MessageBar::Information, tr("Replaying session %1").arg(dir));
  return true;
}

int ComparisonLab::firstHarmfulExample() const {
  for (int i = 0; i < m_gallery->count(); ++i) {
    if (m_gallery->item(i)->data(Qt::UserRole + 2).toBool()) {
      return i;
    }
  }
  return -1;
}

}  // namespace icet::ui
