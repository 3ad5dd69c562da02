"""viz.knob_widget: a live widget in a kernel, a note in headless runs (papermill, nbval)."""

import ipywidgets

from isp_support import viz
from isp_support.series import HEADLESS_ENV


def test_knob_widget_is_live_unless_headless(monkeypatch, capsys):
    calls = []
    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    widget = viz.knob_widget(lambda eps: calls.append(eps), eps=ipywidgets.FloatSlider(value=0.2, min=0, max=1))
    assert widget is not None and calls == [0.2]      # interact runs the callback once with the start value
    widget.widget.children[0].value = 0.5
    assert calls[-1] == 0.5
    monkeypatch.setenv(HEADLESS_ENV, "1")
    assert viz.knob_widget(lambda eps: calls.append(eps), eps=ipywidgets.FloatSlider(value=0.2)) is None
    assert "needs a live kernel" in capsys.readouterr().out and calls[-1] == 0.5
