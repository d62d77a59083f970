import importlib.util
import shutil

import pytest

from interp.errors import InterpError
from interp.report import export_figures
from interp.scan import load_scan


@pytest.mark.fast
def test_export_rejects_unknown_format(tiny_scan_dir, tmp_path):
    with pytest.raises(InterpError, match="choose from png, svg"):
        export_figures(load_scan(tiny_scan_dir), tmp_path, formats=("gif",))


@pytest.mark.fast
@pytest.mark.skipif(importlib.util.find_spec("kaleido") is None or shutil.which("chromium") is None,
                    reason="static export needs `pip install kaleido` and `apt-get install chromium`")
def test_export_svg_offline(tiny_scan_dir, tmp_path):
    paths = export_figures(load_scan(tiny_scan_dir), tmp_path, formats=("svg",))
    text = paths[0].read_text()
    assert paths[0].name == "heatmap-heads.svg" and text.lstrip().startswith("<svg") and "layer" in text
