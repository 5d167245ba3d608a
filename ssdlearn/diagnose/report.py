"""Text tables and figures for the error analysis: SSD's Fig. 3 (top row) and Fig. 4.

They only draw what :mod:`ssdlearn.diagnose.kinds` and ``.characteristics`` compute. The
figures are ``matplotlib.figure.Figure`` objects made without pyplot: a notebook shows the
returned figure once, and a script saves it with ``fig.savefig(path)``.

Lesson 10 (diagnosing a detector) shows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .characteristics import ASPECT_BINS, SIZE_BINS
from .kinds import KINDS

__all__ = ["format_kind_shares", "format_by_characteristic", "plot_kind_shares",
           "plot_by_characteristic"]  # fmt: skip

# Hoiem's colours (Loc blue, Sim red, Oth green, BG purple); correct in light grey so that
# it shows on white, duplicate in a lighter blue next to localization.
KIND_STYLE = {
    "correct": ("Cor: correct", "#e6e6e6"),
    "duplicate": ("Dup: duplicate", "#a9c4e4"),
    "localization": ("Loc: localization", "#4f81bd"),
    "similar": ("Sim: similar class", "#c0504d"),
    "other": ("Oth: other class", "#5ce660"),
    "background": ("BG: background", "#8064a2"),
}
BIN_TEXT = {
    "size": ("XS: smallest 10%", "S: 10-30%", "M: 30-70%", "L: 70-90%", "XL: largest 10%"),
    "aspect": ("XT: tallest 10% (least w/h)", "T: 10-30%", "M: 30-70%", "W: 70-90%",
               "XW: widest 10% (most w/h)"),
}
BIN_COLORS = ("#fde0c5", "#facba6", "#f59e72", "#eb7f54", "#d9534f")
WORD = {"size": "object size", "aspect": "aspect ratio"}


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _panels(shares: Mapping) -> dict[str, Mapping]:
    """One kind_shares result, or {panel title: result}."""
    if not isinstance(shares, Mapping):
        raise TypeError(f"shares must be a kind_shares() result or a dict of them, "
                        f"got {type(shares).__name__}")  # fmt: skip
    panels = {"all classes": shares} if "shares" in shares else dict(shares)
    for title, result in panels.items():
        if not isinstance(result, Mapping) or "shares" not in result:
            raise TypeError(f"shares[{title!r}] is not a kind_shares() result")
    if not panels:
        raise ValueError("shares is empty: nothing to show")
    return panels


# ---- tables ------------------------------------------------------------------------------


def format_kind_shares(shares: Mapping, title: str | None = None) -> str:
    """Fig. 3 as a table: per x-axis point, the share of each kind (%) and the recalls."""
    lines = []
    for name, result in _panels(shares).items():
        head = title or name
        lines.append(f"Error kinds of the top-ranked detections, {head} "
                     f"({result['num_objects']} objects)")  # fmt: skip
        columns = ["correct", "dup", "loc", "similar", "other", "backgr"]
        lines.append(f"{'x objects':>9} {'top n':>6} " + " ".join(f"{c:>7}" for c in columns)
                     + f" {'recall':>7} {'rec@0.1':>7}")
        lines.append("-" * len(lines[-1]))
        for t, (m, n) in enumerate(zip(result["multiples"], result["num_detections"])):
            values = [float(result["shares"][k][t]) * 100 for k in KINDS]
            cells = " ".join(f"{v:>6.1f}%" if not math.isnan(v) else f"{'-':>7}" for v in values)
            lines.append(f"{m:>9g} {n:>6} {cells} {float(result['recall'][t]):>7.3f} "
                         f"{float(result['recall_weak'][t]):>7.3f}")
        lines.append("")
    return "\n".join(lines).rstrip()


def format_by_characteristic(result: Mapping, class_names: Sequence[str] | None = None) -> str:
    """Fig. 4 as tables: normalized AP, AP, recall and object count per class and bin."""
    bins, classes = result["bins"], result["classes"]
    word = WORD.get(result["characteristic"], result["characteristic"])
    blocks = (("ap_n", "mean_ap_n", f"Normalized AP (VOC AP@0.5, N = "
               f"{result['normalized_count']:.1f} objects) by {word}"),
              ("ap", "mean_ap", f"AP (VOC AP@0.5, objects outside the bin ignored) by {word}"),
              ("recall", "mean_recall", f"Recall at IoU 0.5 (all detections) by {word}"),
              ("num_objects", None, f"Objects by {word}"))  # fmt: skip
    lines = []
    for key, mean_key, heading in blocks:
        lines.append(heading)
        lines.append(f"{'class':<16}" + "".join(f"{b:>7}" for b in bins))
        lines.append("-" * len(lines[-1]))
        rows = [(_name(c, class_names), result[key][k]) for k, c in enumerate(classes)]
        if mean_key is not None:
            rows.append(("mean", result[mean_key]))
        else:
            rows.append(("total", result[key].sum(0)))
        for name, values in rows:
            cells = []
            for v in values.tolist():
                if key == "num_objects":
                    cells.append(f"{int(v):>7}")
                else:
                    cells.append(f"{'-':>7}" if math.isnan(v) else f"{v:>7.3f}")
            lines.append(f"{name[:16]:<16}" + "".join(cells))
        lines.append("")
    return "\n".join(lines).rstrip()


# ---- figures -----------------------------------------------------------------------------


def plot_kind_shares(shares: Mapping, suptitle: str | None = None) -> Figure:
    """Fig. 3, top row: stacked areas of each kind's share among the top-ranked detections.

    Args:
        shares: a :func:`kind_shares` result, or {panel title: result} for several panels
            (a class group each, as the paper's animals / vehicles / furniture).
        suptitle: a title over all panels.
    Returns:
        The figure: x is the number of top detections in units of the panel's number of
        objects (evenly spaced, doubling); black lines are the recall at IoU 0.5 (solid)
        and 0.1 (dashed).
    """
    panels = _panels(shares)
    fig = Figure(figsize=(4.2 * len(panels) + 2.6, 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, result) in zip(axes, panels.items()):
        x = list(range(len(result["multiples"])))
        layers = [[0.0 if math.isnan(v) else 100 * v for v in result["shares"][k].tolist()]
                  for k in KINDS]  # fmt: skip
        ax.stackplot(x, layers, colors=[KIND_STYLE[k][1] for k in KINDS],
                     edgecolor="#555555", linewidth=0.4)  # fmt: skip
        ax.plot(x, (100 * result["recall"]).tolist(), "k-", linewidth=2)
        ax.plot(x, (100 * result["recall_weak"]).tolist(), "k--", linewidth=2)
        ax.set_xticks(x, [f"{m:g}" for m in result["multiples"]])
        ax.set_xlim(0, max(len(x) - 1, 1))
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"total detections (x {result['num_objects']} objects)")
        ax.set_ylabel("percentage of each type")
        wanted = [max(1, round(m * result["num_objects"])) for m in result["multiples"]]
        short = [i for i, (w, n) in enumerate(zip(wanted, result["num_detections"])) if n < w]
        if short and result["num_objects"]:
            ax.axvline(short[0], color="k", linestyle=":", linewidth=1)
            ax.annotate(f"all {result['num_detections'][-1]}\ndetections", (short[0], 3),
                        xytext=(3, 0), textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_title(title)
    handles = [Patch(facecolor=KIND_STYLE[k][1], edgecolor="#555555", label=KIND_STYLE[k][0])
               for k in reversed(KINDS)]  # top of the stack first, as drawn
    handles += [Line2D([], [], color="k", linewidth=2, label="recall, IoU >= 0.5"),
                Line2D([], [], color="k", linewidth=2, linestyle="--",
                       label="recall, IoU >= 0.1")]  # fmt: skip
    fig.legend(handles=handles, loc="outside right center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_by_characteristic(results: Mapping | Sequence[Mapping],
                           class_names: Sequence[str] | None = None,
                           suptitle: str | None = None) -> Figure:  # fmt: skip
    """Fig. 4: normalized AP per class and bin (bars), recall (dots), all objects (dashes).

    Args:
        results: one :func:`ap_by_characteristic` result or several (one row each, e.g.
            size and aspect ratio).
        class_names: names indexed by label, for the x axis.
        suptitle: a title over all rows.
    """
    rows = [results] if isinstance(results, Mapping) else list(results)
    if not rows or not all(isinstance(r, Mapping) and "ap_n" in r for r in rows):
        raise TypeError("results must be ap_by_characteristic() results")
    width = max(len(r["classes"]) + 1 for r in rows)
    fig = Figure(figsize=(1.9 * width + 3.2, 3.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, result in zip(axes, rows):
        kind = result["characteristic"]
        names = [_name(c, class_names) for c in result["classes"]] + ["mean"]
        ap_n = [*result["ap_n"].tolist(), result["mean_ap_n"].tolist()]
        recall = [*result["recall"].tolist(), result["mean_recall"].tolist()]
        nbins = len(result["bins"]) - 1
        step = 1 / (nbins + 1)
        for k, (values, recalls) in enumerate(zip(ap_n, recall)):
            for b in range(nbins):
                x = k + (b - (nbins - 1) / 2) * step
                if math.isnan(values[b]):
                    ax.text(x, 0.02, "none", rotation=90, ha="center", fontsize=7)
                    continue
                ax.bar(x, values[b], step * 0.9, color=BIN_COLORS[b], edgecolor="#555555")
                # The value inside the bar, clear of the recall dot above it.
                y = 0.02 if values[b] >= 0.16 else values[b] + 0.02
                ax.text(x, y, f"{values[b]:.2f}", rotation=90, ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
                ax.plot(x, recalls[b], "ko", markersize=3.5)
            if not math.isnan(values[nbins]):
                half = nbins * step / 2
                ax.plot([k - half, k + half], [values[nbins]] * 2, "k--", linewidth=1)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylim(0, 1.1)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("normalized AP / recall")
        ax.set_title(f"Normalized AP (VOC07, IoU 0.5) by {WORD[kind]}, "
                     f"N = {result['normalized_count']:.0f} objects")  # fmt: skip
        bins = SIZE_BINS if kind == "size" else ASPECT_BINS
        handles = [Patch(facecolor=BIN_COLORS[b], edgecolor="#555555", label=BIN_TEXT[kind][b])
                   for b in range(len(bins))]  # fmt: skip
        handles += [Line2D([], [], color="k", marker="o", linestyle="", markersize=3.5,
                           label="recall in the bin"),
                    Line2D([], [], color="k", linestyle="--", label="all objects")]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
