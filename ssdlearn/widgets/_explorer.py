"""What every explorer shares: the :class:`Explorer` base, sliders, pictures, PNG rendering.
Lessons 01 to 08.

An explorer is an ``ipywidgets.VBox``: controls on top, a readout, and a picture rendered to
PNG with matplotlib's Agg backend into an ``ipywidgets.Image``. Rendering to an image
(instead of a live matplotlib backend) redraws the same way in JupyterLab, Notebook, VS Code
and in tests: a test sets ``explorer.controls["name"].value`` and reads
``explorer.readout.value`` or the new ``explorer.image.value``.
"""

from __future__ import annotations

import base64
import io
from functools import cache

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["Explorer", "figure_to_png"]


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure (made with ``Figure()``, not pyplot) to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """Rows of controls, a readout and a picture; redrawn whenever a control changes.

    Subclasses implement :meth:`draw`, which fills a figure and returns the readout's HTML.

    Attributes:
        controls: name -> control widget.
        readout: HTML widget with what the picture shows, in numbers.
        image: Image widget with the picture (PNG).
    """

    figsize: tuple[float, float] = (4.5, 4.5)

    def __init__(self, rows: list[list[widgets.Widget]], controls: dict[str, widgets.Widget],
                 image_width: str = "360px") -> None:
        self.controls = controls
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=image_width))
        super().__init__([*(widgets.HBox(row) for row in rows), self.readout, self.image])
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        fig = Figure(figsize=self.figsize)
        self.readout.value = self.draw(fig)
        fig.tight_layout()
        self.image.value = figure_to_png(fig)

    def draw(self, fig: Figure) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs) -> dict | None:
        """The live widget, plus a PNG of its picture as it is now. JupyterLab shows the
        widget; a viewer without a kernel (GitHub, nbviewer, a static export, the student
        handout) has no widget to show and shows the PNG instead."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle


def _slider(kind: type, description: str, value: float, low: float, high: float,
            step: float = 1, width: str = "220px") -> widgets.Widget:
    return kind(value=value, min=low, max=high, step=step, description=description,
                continuous_update=True, layout=widgets.Layout(width=width),
                style={"description_width": "60px"})


@cache
def _pictures(size: int = 300) -> dict[str, Tensor]:
    from ..data import ShapesDataset, sample_photo  # data is only needed once drawn

    return {"photo": sample_photo(size), "shapes": ShapesDataset(1, size, seed=7)[0][0]}
