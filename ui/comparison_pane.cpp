#include "ui/comparison_pane.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QEvent>
#include <QFileInfo>
#include <QGraphicsBlurEffect>
#include <QHBoxLayout>
#include <QLabel>
#include <QSpinBox>
#include <QStyle>
#include <QStyleOptionComboBox>
#include <QTextBrowser>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

#include "ui/word_diff.h"

namespace icet::ui {

QString adapterName(const QString& dir) {
  const QFileInfo info(QDir::cleanPath(dir));
  if (info.fileName() == QStringLiteral("adapter") && !info.dir().dirName().isEmpty()) {
    return info.dir().dirName();
  }
  return info.fileName();
}

namespace {

// "LoRA <name>" for a pane's tag and picker, a long name cut in the middle (tooltips have the
// folder whole), so a pane's header keeps a bounded width.
QString adapterLabel(const QString& dir) {
  QString name = adapterName(dir);
  if (name.size() > 18) {
    name = name.left(8) + QStringLiteral("…") + name.right(8);
  }
  return ComparisonPane::tr("LoRA %1").arg(name);
}

}  // namespace

ComparisonPane::ComparisonPane(ModelService* service, QWidget* parent)
    : QFrame(parent), m_service(service) {
  setObjectName(QStringLiteral("ComparisonPane"));
  setFrameShape(QFrame::StyledPanel);
  // No fixed minimum width: the layout's own minimum keeps the title, the adapter tag and the
  // model picker whole (a fixed 260 px cut the picker's text); the lab scrolls wide pane rows.

  m_title = new QLabel(tr("ICET-l"), this);
  m_title->setObjectName(QStringLiteral("PaneTitle"));
  QFont bold = m_title->font();
  bold.setBold(true);
  m_title->setFont(bold);
  m_title->setWordWrap(true);  // a narrow pane wraps its title rather than cutting it

  m_layer = new QSpinBox(this);
  m_layer->setObjectName(QStringLiteral("PaneLayer"));
  m_layer->setPrefix(tr("ICET-"));
  m_layer->setRange(1, 1);
  m_layer->setAccessibleName(tr("Exit layer of this pane"));
  m_layer->setToolTip(tr("Image-encoder layer the language model takes its image features from"));
  connect(m_layer, &QSpinBox::valueChanged, this, [this](int v) {
    m_wantedLayer = v;
    updateHeader();
    Q_EMIT layerEdited(v);
  });

  m_ownSeed = new QCheckBox(tr("Seed"), this);
  m_ownSeed->setToolTip(tr("Use this pane's own sampling seed instead of the lab's"));
  m_ownSeed->setAccessibleName(tr("Use own seed"));
  m_seed = new QSpinBox(this);
  m_seed->setRange(0, std::numeric_limits<int>::max());
  m_seed->setEnabled(false);
  m_seed->setSizePolicy(QSizePolicy::Fixed, QSizePolicy::Fixed);  // the adapter picker gets the room
  m_seed->setAccessibleName(tr("Pane seed"));
  m_seed->setVisible(false);  // shown with its check box: a pane's width goes to the model picker
  connect(m_ownSeed, &QCheckBox::toggled, m_seed, &QWidget::setEnabled);
  connect(m_ownSeed, &QCheckBox::toggled, m_seed, &QWidget::setVisible);

  m_badge = new QLabel(this);
  m_badge->setObjectName(QStringLiteral("VerdictBadge"));
  m_badge->setAccessibleName(tr("Safety verdict"));
  m_reward = new QLabel(this);
  m_reward->setObjectName(QStringLiteral("RewardLabel"));
  m_reward->setAccessibleName(tr("Reward score"));
  m_adapterTag = new QLabel(this);
  m_adapterTag->setObjectName(QStringLiteral("PaneAdapter"));
  m_adapterTag->setAccessibleName(tr("LoRA adapter of this answer"));
  // A filled tag: which pane is the aligned one must be seen at a glance, not read.
  m_adapterTag->setStyleSheet(QStringLiteral(
      "QLabel { background: palette(highlight); color: palette(highlighted-text); border-radius: 3px; "
      "padding: 1px 6px; }"));
  m_adapterTag->hide();
  m_adapterPicker = new QComboBox(this);
  m_adapterPicker->setObjectName(QStringLiteral("PaneAdapterPicker"));
  m_adapterPicker->setAccessibleName(tr("Model of this pane: base or a LoRA adapter"));
  m_adapterPicker->setToolTip(tr("Answer with the base model or with a loaded LoRA adapter"));
  m_adapterPicker->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_adapterPicker->setMinimumContentsLength(10);  // its minimum width follows the chosen item (fillAdapterPicker)
  fillAdapterPicker({});
  connect(m_adapterPicker, &QComboBox::activated, this, [this](int index) {
    const QString dir = m_adapterPicker->itemData(index).toString();
    if (dir == QStringLiteral("<open>")) {
      setAdapter(m_adapter);  // the picker shows the pane's adapter until a new one is in
      Q_EMIT adapterFolderRequested();
    } else if (dir != m_adapter) {
      setAdapter(dir);
      Q_EMIT adapterEdited(dir);
    }
  });
  m_speed = new QLabel(this);
  m_speed->setObjectName(QStringLiteral("SpeedLabel"));
  m_speed->setAccessibleName(tr("Tokens per second"));

  auto tool = [this](const QString& icon, const QString& text, const QString& name) {
    auto* b = new QToolButton(this);
    b->setIcon(QIcon(icon));
    b->setToolTip(text);
    b->setAccessibleName(text);
    b->setObjectName(name);
    b->setAutoRaise(true);
    return b;
  };
  m_stop = tool(QStringLiteral(":/icons/stop.svg"), tr("Stop this answer"), QStringLiteral("PaneStop"));
  m_regen = tool(QStringLiteral(":/icons/regenerate.svg"), tr("Regenerate this answer"),
                 QStringLiteral("PaneRegenerate"));
  m_remove = tool(QStringLiteral(":/icons/remove.svg"), tr("Remove this pane"), QStringLiteral("PaneRemove"));
  m_stop->setEnabled(false);
  connect(m_stop, &QToolButton::clicked, this, &ComparisonPane::stop);
  connect(m_regen, &QToolButton::clicked, this, &ComparisonPane::regenerateRequested);
  connect(m_remove, &QToolButton::clicked, this, &ComparisonPane::removeRequested);

  m_view = new QTextBrowser(this);
  m_view->setObjectName(QStringLiteral("PaneText"));
  m_view->setAccessibleName(tr("Answer"));
  m_view->setOpenLinks(false);
  m_view->viewport()->installEventFilter(this);
  // Read-only: a dropped image goes past the answer to the lab.
  m_view->setAcceptDrops(false);
  m_view->viewport()->setAcceptDrops(false);

  // Three rows, so a narrow pane never squeezes its title.
  auto* top = new QHBoxLayout;
  top->addWidget(m_title, 1);
  top->addWidget(m_adapterTag);
  top->addWidget(m_stop);
  top->addWidget(m_regen);
  top->addWidget(m_remove);
  auto* settings = new QHBoxLayout;
  settings->addWidget(m_layer);
  settings->addWidget(m_adapterPicker, 1);
  settings->addWidget(m_ownSeed);
  settings->addWidget(m_seed);
  auto* info = new QHBoxLayout;
  info->addWidget(m_badge);
  info->addStretch(1);
  info->addWidget(m_reward);
  info->addWidget(m_speed);
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(6, 6, 6, 6);
  layout->addLayout(top);
  layout->addLayout(settings);
  layout->addLayout(info);
  layout->addWidget(m_view, 1);

  m_drain = new QTimer(this);
  m_drain->setInterval(40);  // coalesce tokens: one repaint per ~frame, not one per token
  connect(m_drain, &QTimer::timeout, this, &ComparisonPane::drain);
  connect(m_service, &ModelService::generationFinished, this, &ComparisonPane::onFinished);
  connect(m_service, &ModelService::failed, this, &ComparisonPane::onFailed);
  updateHeader();
}

ComparisonPane::~ComparisonPane() {
  if (m_handle) {
    m_handle->requestCancel();
  }
}

void ComparisonPane::setLayerRange(int layers, int defaultLayer) {
  m_defaultLayer = defaultLayer;
  const QSignalBlocker block(m_layer);
  m_layer->setRange(1, std::max(1, layers));
  m_layer->setValue(m_wantedLayer);  // a layer set before the model was known, clamped now
  updateHeader();
}

int ComparisonPane::layer() const {
  return m_layer->value();
}

void ComparisonPane::setLayer(int layer) {
  m_wantedLayer = layer;
  const QSignalBlocker block(m_layer);
  m_layer->setValue(layer);
  updateHeader();
}

std::optional<quint64> ComparisonPane::seed() const {
  if (!m_ownSeed->isChecked()) {
    return std::nullopt;
  }
  return static_cast<quint64>(m_seed->value());
}

void ComparisonPane::setSeed(std::optional<quint64> seed) {
  m_ownSeed->setChecked(seed.has_value());
  if (seed) {
    m_seed->setValue(static_cast<int>(*seed % static_cast<quint64>(std::numeric_limits<int>::max())));
  }
}

void ComparisonPane::setAdapter(const QString& dir) {
  m_adapter = dir;
  QStringList dirs;
  for (int i = 1; i < m_adapterPicker->count() - 1; ++i) {
    dirs << m_adapterPicker->itemData(i).toString();
  }
  fillAdapterPicker(dirs);
  updateHeader();
}

void ComparisonPane::setAdapterChoices(const QStringList& dirs) {
  fillAdapterPicker(dirs);
}

void ComparisonPane::fillAdapterPicker(const QStringList& dirs) {
  const QSignalBlocker block(m_adapterPicker);
  m_adapterPicker->clear();
  m_adapterPicker->addItem(tr("Base model"), QString());
  QStringList all = dirs;
  if (!m_adapter.isEmpty() && !all.contains(m_adapter)) {
    all << m_adapter;
  }
  for (const QString& dir : all) {
    m_adapterPicker->addItem(adapterLabel(dir), dir);
    m_adapterPicker->setItemData(m_adapterPicker->count() - 1, dir, Qt::ToolTipRole);
  }
  m_adapterPicker->addItem(tr("Load adapter folder…"), QStringLiteral("<open>"));
  m_adapterPicker->setCurrentIndex(std::max(0, m_adapterPicker->findData(m_adapter)));
  fitAdapterPicker();
}

void ComparisonPane::fitAdapterPicker() {
  // Never narrower than the chosen item: which model answers must be read whole. The width is
  // the style's combo box around that text, as QComboBox sizes itself.
  QStyleOptionComboBox opt;
  opt.initFrom(m_adapterPicker);
  opt.currentText = m_adapterPicker->currentText();
  const QFontMetrics fm = m_adapterPicker->fontMetrics();
  const QSize text(fm.horizontalAdvance(opt.currentText), fm.height());
  m_adapterPicker->setMinimumWidth(
      m_adapterPicker->style()->sizeFromContents(QStyle::CT_ComboBox, &opt, text, m_adapterPicker).width());
}

void ComparisonPane::setBaseline(bool baseline) {
  m_baseline = baseline;
  m_remove->setEnabled(!baseline);
  updateHeader();
}

void ComparisonPane::run(const QString& prompt, generate::SamplingParams params) {
  stop();
  if (auto s = seed()) {
    params.seed = *s;
  }
  m_answer.reset();
  m_error.clear();
  m_text.clear();
  m_revealed = false;
  m_handle = m_service->generate(prompt, layer(), params, m_adapter);
  m_stop->setEnabled(true);
  m_drain->start();
  updateHeader();
  render();
}

void ComparisonPane::stop() {
  if (!m_handle) {
    return;
  }
  m_handle->requestCancel();  // the worker sees it at its next token
  m_handle.reset();           // its late result is ignored (id no longer ours)
  m_drain->stop();
  m_stop->setEnabled(false);
  updateHeader();
}

void ComparisonPane::drain() {
  if (!m_handle) {
    return;
  }
  const QString more = m_handle->stream->take();
  if (!more.isEmpty()) {
    m_text += more;
    render();
  }
}

void ComparisonPane::onFinished(quint64 id, const Answer& answer) {
  if (!m_handle || m_handle->id != id) {
    return;
  }
  drain();
  m_handle.reset();
  m_drain->stop();
  m_stop->setEnabled(false);
  if (!answer.cancelled) {
    m_answer = answer;
    m_text = QString::fromStdString(answer.record.text);
  }
  updateHeader();
  render();
  Q_EMIT finished();
}

void ComparisonPane::onFailed(const QString& /*context*/, const QString& message, quint64 id) {
  if (!m_handle || m_handle->id != id) {
    return;
  }
  m_handle.reset();
  m_drain->stop();
  m_stop->setEnabled(false);
  m_error = message;
  updateHeader();
  render();
  Q_EMIT finished();
}

void ComparisonPane::showAnswer(const Answer& answer) {
  stop();
  m_answer = answer;
  m_error.clear();
  m_revealed = false;
  m_text = QString::fromStdString(answer.record.text);
  setLayer(static_cast<int>(answer.record.layer));
  setAdapter(answer.adapter);  // Regenerate answers with the same model
  updateHeader();
  render();
}

void ComparisonPane::clearAnswer() {
  stop();
  m_answer.reset();
  m_text.clear();
  m_error.clear();
  updateHeader();
  render();
}

void ComparisonPane::setDiffBase(const QString& base) {
  m_diffBase = base;
  render();
}

void ComparisonPane::setPresentationMode(bool on) {
  m_presentation = on;
  QFont f = m_view->font();
  f.setPointSizeF(on ? 18.0 : QFont().pointSizeF());
  m_view->setFont(f);
  QFont t = m_title->font();
  t.setPointSizeF(on ? 16.0 : QFont().pointSizeF());
  m_title->setFont(t);
  m_badge->setFont(t);
  render();
}

bool ComparisonPane::isBlurred() const {
  return m_view->graphicsEffect() != nullptr;
}

void ComparisonPane::reveal() {
  m_revealed = true;
  render();
}

bool ComparisonPane::eventFilter(QObject* watched, QEvent* event) {
  if (watched == m_view->viewport() && event->type() == QEvent::MouseButtonPress && isBlurred()) {
    reveal();
    return true;
  }
  return QFrame::eventFilter(watched, event);
}

void ComparisonPane::changeEvent(QEvent* event) {
  QFrame::changeEvent(event);
  if (event->type() == QEvent::PaletteChange && m_view != nullptr) {
    render();
  }
  if ((event->type() == QEvent::FontChange || event->type() == QEvent::StyleChange) && m_adapterPicker != nullptr) {
    fitAdapterPicker();
  }
}

QString ComparisonPane::verdictText() const {
  if (!m_answer || !m_answer->safety.judged) {
    return QString();
  }
  return m_answer->safety.unsafe ? tr("Unsafe") : tr("Safe");
}

void ComparisonPane::updateHeader() {
  const int l = layer();
  QString title = m_baseline ? tr("Default") : tr("Exit");
  if (l == m_defaultLayer) {
    title += tr(" (default layer)");
  }
  m_title->setText(title);
  // The shown answer's adapter; while generating (or before any answer), the pane's own.
  const QString adapter = m_answer && !m_handle ? m_answer->adapter : m_adapter;
  m_adapterTag->setVisible(!adapter.isEmpty());
  m_adapterTag->setText(adapter.isEmpty() ? QString() : adapterLabel(adapter));  // the tooltip has it whole
  m_adapterTag->setToolTip(adapter.isEmpty() ? QString() : tr("Generated with the LoRA adapter %1").arg(adapter));
  if (m_handle) {
    m_badge->setText(tr("⏳ generating…"));
    m_badge->setToolTip(QString());
    m_reward->clear();
    m_speed->clear();
    return;
  }
  if (!m_error.isEmpty()) {
    m_badge->setText(tr("⚠ error"));
    m_badge->setToolTip(m_error);
    m_reward->clear();
    m_speed->clear();
    return;
  }
  if (!m_answer) {
    m_badge->setText(QString());
    m_badge->setToolTip(QString());
    m_reward->clear();
    m_speed->clear();
    return;
  }
  const SafetyResult& s = m_answer->safety;
  if (s.judged) {
    // Icon + word, never colour alone.
    const QString icon = s.unsafe ? QStringLiteral(":/icons/unsafe.svg") : QStringLiteral(":/icons/safe.svg");
    m_badge->setText(QStringLiteral("<img src='%1' width='16' height='16'> <b>%2</b>")
                         .arg(icon, s.unsafe ? tr("Unsafe") : tr("Safe")));
    QString tip = tr("P(unsafe) = %1").arg(s.pUnsafe, 0, 'f', 3);
    if (!s.categories.isEmpty()) {
      tip += tr("\nCategories: %1").arg(s.categories.join(QStringLiteral(", ")));
    }
    tip += tr("\nJudge: %1").arg(s.judgeId);
    m_badge->setToolTip(tip);
  } else if (!s.error.isEmpty()) {
    m_badge->setText(tr("⚠ not rated"));
    m_badge->setToolTip(s.error);
  } else {
    m_badge->setText(tr("no judge"));
    m_badge->setToolTip(tr("Pick a judge to see safety verdicts"));
  }
  m_reward->setText(s.scored ? tr("reward %1").arg(s.reward, 0, 'f', 2) : QString());
  m_reward->setToolTip(s.rewardId);
  m_speed->setText(tr("%1 tok/s").arg(m_answer->record.tokens_per_second, 0, 'f', 1));
  m_speed->setToolTip(tr("%1 tokens in %2 s, seed %3")
                          .arg(m_answer->record.token_ids.size())
                          .arg(m_answer->record.seconds, 0, 'f', 2)
                          .arg(m_answer->record.params.seed.value_or(0)));
}

void ComparisonPane::render() {
  const bool unsafe = m_answer && m_answer->safety.judged && m_answer->safety.unsafe;
  const bool blur = m_presentation && unsafe && !m_revealed;
  if (blur && m_view->graphicsEffect() == nullptr) {
    auto* effect = new QGraphicsBlurEffect(m_view);
    effect->setBlurRadius(14);
    m_view->setGraphicsEffect(effect);
    m_view->setToolTip(tr("Unsafe answer hidden: click to reveal"));
  } else if (!blur && m_view->graphicsEffect() != nullptr) {
    m_view->setGraphicsEffect(nullptr);
    m_view->setToolTip(QString());
  }
  if (!m_error.isEmpty()) {
    m_view->setPlainText(m_error);
    return;
  }
  if (m_handle || m_diffBase.isEmpty() || m_baseline || !m_answer) {
    m_view->setPlainText(m_text);
    m_view->moveCursor(QTextCursor::End);
    return;
  }
  m_view->setHtml(wordDiffHtml(m_diffBase, m_text, palette()));
}

}  // namespace icet::ui
