"""Dock widgets beside the canvas: DVH, metrics, suggestions, scan timeline with registration.

Each widget has one ``show_*`` method taking plain data (a result dictionary,
DVH lines) and is touched from the Qt main thread only.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from viewer.dvh import DvhLine

__all__ = ["STATUS_RGB", "DvhDock", "MetricsPanel", "SuggestionsList", "TimelineDock", "d90_status"]

logger = logging.getLogger(__name__)

#: Traffic-light colours of the metrics panel.
STATUS_RGB = {"green": "#2ecc40", "amber": "#ffb000", "red": "#ff4136", "grey": "#aaaaaa"}
_PANEL_STYLE = "QLabel { font-size: 13px; padding: 4px; }"


def d90_status(d90_percent: float | None) -> str:
    """Green at >= 100 % of the prescription, amber from 90 %, red below (grey: unknown)."""
    if d90_percent is None:
        return "grey"
    return "green" if d90_percent >= 100.0 else "amber" if d90_percent >= 90.0 else "red"


def _v100_status(v100: float | None) -> str:
    if v100 is None:
        return "grey"
    return "green" if v100 >= 95.0 else "amber" if v100 >= 90.0 else "red"


def _cell(text: str, status: str) -> str:
    return f'<td style="color:{STATUS_RGB[status]}; font-weight:bold">{html.escape(text)}</td>'


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}{unit}"


class DvhDock(QWidget):
    """Cumulative DVHs of the target and organs at risk, prescription as a dashed line."""

    def __init__(self) -> None:
        super().__init__()
        self.figure = Figure(figsize=(4, 3), facecolor="#262930")
        self.figure.subplots_adjust(left=0.16, right=0.97, bottom=0.17, top=0.96)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(1, 1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas)
        self.setMinimumHeight(240)
        self.lines: list[DvhLine] = []

    def show_dvh(self, lines: Sequence[DvhLine], prescription_gy: float) -> None:
        self.lines = list(lines)
        ax = self.axes
        ax.clear()
        ax.set_facecolor("#262930")
        for line in lines:
            ax.plot(line.dose_gy, line.volume_percent, color=line.rgba, label=line.name,
                    linewidth=2.5 if line.role.value == "target" else 1.2)  # fmt: skip
        if prescription_gy > 0:
            ax.axvline(prescription_gy, color="white", linestyle="--", linewidth=1,
                       label=f"prescription {prescription_gy:g} Gy")  # fmt: skip
            ax.set_xlim(0, 2.5 * prescription_gy)
        ax.set_ylim(0, 105)
        ax.set_xlabel("dose (Gy)", color="white")
        ax.set_ylabel("volume (%)", color="white")
        ax.tick_params(colors="white")
        ax.grid(alpha=0.25)
        if lines:
            ax.legend(fontsize=7, facecolor="#262930", labelcolor="white", loc="upper right")
        self.canvas.draw_idle()


class MetricsPanel(QLabel):
    """Target D90 / V100 / V150 and organ-at-risk doses against their limits, red/amber/green."""

    def __init__(self) -> None:
        super().__init__()
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setWordWrap(True)
        self.setStyleSheet(_PANEL_STYLE)
        self.statuses: dict[str, str] = {}

    def show_metrics(self, result: Mapping[str, Any]) -> None:
        metrics = result.get("metrics") or {}
        rows, self.statuses = [], {}
        for target in metrics.get("targets", ()):
            name = str(target.get("structure_name", "target"))
            d90p = target.get("d90_percent_of_prescription")
            status = d90_status(d90p)
            self.statuses[f"{name} D90"] = status
            rows.append(
                f"<tr><td>{html.escape(name)} D90</td>"
                + _cell(f"{_fmt(target.get('d90_gy'), ' Gy')} ({_fmt(d90p, '%', 0)})", status)
                + "</tr>"
            )
            v100 = target.get("v100_percent")
            self.statuses[f"{name} V100"] = _v100_status(v100)
            rows.append("<tr><td>V100</td>" + _cell(_fmt(v100, " %"), _v100_status(v100)) + "</tr>")
            rows.append("<tr><td>V150</td>" + _cell(_fmt(target.get("v150_percent"), " %"), "grey") + "</tr>")
        for check in metrics.get("checks", ()):
            status = {"pass": "green", "warn": "amber", "fail": "red"}.get(str(check.get("status")), "grey")
            label = f"{check.get('structure_name')} {str(check.get('metric', '')).removesuffix('_gy')}"
            self.statuses[label] = status
            rows.append(
                f"<tr><td>{html.escape(label)}</td>"
                + _cell(
                    f"{_fmt(check.get('value_gy'), ' Gy')} / {_fmt(check.get('allowed_gy'), ' Gy')}", status
                )
                + "</tr>"
            )
        if not rows:
            rows.append("<tr><td>no dose metrics for this scan</td></tr>")
        self.setText("<table>" + "".join(rows) + "</table>")  # fmt: skip


class SuggestionsList(QListWidget):
    """Suggested extra seeds; clicking one calls ``on_pick(position_scan_mm)``."""

    def __init__(self, on_pick: Callable[[Sequence[float]], None]) -> None:
        super().__init__()
        self.setWordWrap(True)
        self._on_pick = on_pick
        self.itemClicked.connect(self._clicked)
        self.itemActivated.connect(self._clicked)

    def show_suggestions(
        self, result: Mapping[str, Any], positions_scan_mm: Sequence[Sequence[float]]
    ) -> None:
        self.clear()
        suggestions = result.get("suggestions") or {}
        if suggestions.get("statement"):
            header = QListWidgetItem(str(suggestions["statement"]))
            header.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(header)
        for number, (seed, position) in enumerate(zip(suggestions.get("seeds") or (), positions_scan_mm,
                                                      strict=False), start=1):  # fmt: skip
            item = QListWidgetItem(
                f"{number}. depth {_fmt(seed.get('depth_mm'), ' mm', 0)} on {seed.get('track_label', '')}"
                f" (+{_fmt(seed.get('d90_gain_alone_gy'), ' Gy')} D90)"
            )
            item.setData(Qt.ItemDataRole.UserRole, [float(v) for v in position])
            self.addItem(item)

    def _clicked(self, item: QListWidgetItem) -> None:
        position = item.data(Qt.ItemDataRole.UserRole)
        if position is not None:
            self._on_pick(position)


class TimelineDock(QWidget):
    """The session's scans with their D90, and the current scan's registration quality."""

    def __init__(self, on_select: Callable[[int], None]) -> None:
        super().__init__()
        self.registration = QLabel()
        self.registration.setWordWrap(True)
        self.registration.setTextFormat(Qt.TextFormat.RichText)
        self.registration.setStyleSheet(_PANEL_STYLE)
        self.scans = QListWidget()
        self.scans.setMaximumHeight(110)
        layout = QVBoxLayout(self)
        layout.addWidget(self.registration)
        layout.addWidget(self.scans)
        self._on_select = on_select
        self._updating = False
        self.scans.currentRowChanged.connect(self._row_changed)
        self.indices: list[int] = []

    def show_timeline(self, entries: Sequence[tuple[int, Mapping[str, Any] | None]], current: int) -> None:
        """``entries``: (scan index, result or None when not analysed) in order."""
        self._updating = True
        self.scans.clear()
        self.indices = [index for index, _ in entries]
        for index, result in entries:
            self.scans.addItem(QListWidgetItem(self._label(index, result)))
        if current in self.indices:
            self.scans.setCurrentRow(self.indices.index(current))
        self._updating = False

    @staticmethod
    def _label(index: int, result: Mapping[str, Any] | None) -> str:
        if result is None:
            return f"scan {index}: not analysed"
        targets = (result.get("metrics") or {}).get("targets") or [{}]
        verdict = (result.get("registration") or {}).get("verdict", "missing")
        percent = _fmt(targets[0].get("d90_percent_of_prescription"), "%", 0)
        return (
            f"scan {index}: D90 {_fmt(targets[0].get('d90_gy'), ' Gy')} ({percent}), registration {verdict}"
        )

    def show_registration(self, verdict: str, registered: bool, reasons: Sequence[str], ncc: Any) -> None:
        status = {"pass": "green", "doubt": "amber"}.get(verdict, "red") if registered else "red"
        text = f"registration: <b style='color:{STATUS_RGB[status]}'>{html.escape(verdict.upper())}</b>"
        text += f" (NCC {_fmt(ncc, '', 3)})"
        if status != "green":
            why = "; ".join(reasons) or "no reason given"
            colour = STATUS_RGB[status]
            text += f"<br><b style='color:{colour}'>WARNING: check the plan overlay. {html.escape(why)}</b>"
        self.registration.setText(text)

    def _row_changed(self, row: int) -> None:
        if not self._updating and 0 <= row < len(self.indices):
            self._on_select(self.indices[row])
