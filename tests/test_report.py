"""report: every row of a result in report.md and report.html (passed, failed, not run with its reason and fix),
each claim's figures embedded, everything from the runs escaped in HTML. Results are built by hand here, with
claims that exist only in this test, so the report is checked without any run (test_reproduce.py renders a
real one)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from robinherit.reproduce import CLAIMS, Claim, ClaimSpec, Evidence, Figure, ReproduceResult, ReproduceSettings
from robinherit.reproduce.report import write_report
from robinherit.reproduce.stats import not_run_row


class Drawn(ClaimSpec):
    """A claim whose figures are real PNGs with a title and caption that need escaping."""

    number = 90
    name = "drawn"

    def __init__(self, id: str, n_figures: int):
        self.id, self.n_figures = id, n_figures

    def figures(self, row, ev):
        from robinherit.reproduce.figures import plt, png

        out = []
        for i in range(self.n_figures):
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot(np.arange(10) ** (i + 1))
            ax.set_title(self.id)  # every figure a different picture
            out.append(Figure(f"{self.id} figure {i} <b>", png(fig), f"Caption {i} of {self.id}: a < b & c > d."))
        return out


class Fails(ClaimSpec):
    number = 91
    name = "fails"

    def __init__(self, id: str):
        self.id = id

    def figures(self, row, ev):
        raise AssertionError("a not-run claim has no figures")


@pytest.fixture
def result(monkeypatch):
    monkeypatch.setitem(CLAIMS, "a1", Drawn("a1", 2))
    monkeypatch.setitem(CLAIMS, "a2", Drawn("a2", 1))
    monkeypatch.setitem(CLAIMS, "nr", Fails("nr"))
    rows = [
        Claim(
            "a1",
            90,
            "passes <ok>",
            "Statement with <tags> & ampersands.",
            {"x": [1, 2]},
            [0.5, 0.6, 0.55],
            side_condition="side <condition>",
            side_ok=True,
        ).to_dict(),
        Claim(
            "a2", 90, "fails", "A failing claim.", {}, [0.1, -0.2, 0.05], side_condition="never", side_ok=False
        ).to_dict(),
        not_run_row(
            "nr",
            91,
            "not run <claim>",
            None,
            "Needs a <package>.",
            "torchattacks is not installed",
            "pip install <torchattacks>",
        ),
        Claim("gone", 92, "from an older registry", "No claim module knows this row.", {}, [0.3, 0.4, 0.35]).to_dict(),
    ]
    settings = ReproduceSettings(seeds=(0, 1, 2), quick=True)
    ev = Evidence(settings, store=None, configs={})
    return ReproduceResult(claims=rows, records={}, evidence=ev, settings=settings.summary())


def test_every_row_is_in_both_reports(result, tmp_path):
    html_path, md_path = write_report(result, None, tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert "| a1 | passes <ok> | PASS | +0.550 |" in md
    assert "| a2 | fails | FAIL |" in md
    assert "| nr | not run <claim> | NOT RUN | n/a | n/a | n/a | 0 |" in md
    assert "| gone | from an older registry | PASS |" in md
    assert "2/4 claims passed, 1 not run." in md
    rows = re.findall(r"<tr class='([a-z-]+)'><td>([^<]*)</td>", page)
    assert rows == [("pass", "a1"), ("fail", "a2"), ("not-run", "nr"), ("pass", "gone")]


def test_figures_are_embedded_in_row_order(result, tmp_path):
    html_path, md_path = write_report(result, None, tmp_path)
    page = html_path.read_text()
    titles = re.findall(r"<h3>Figure (\d+)\. (.*?)</h3>", page)
    assert titles == [("1", "a1 figure 0 &lt;b&gt;"), ("2", "a1 figure 1 &lt;b&gt;"), ("3", "a2 figure 0 &lt;b&gt;")]
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert len(set(images)) == 3  # each figure its own picture
    assert page.index('<table id="claims">') < page.index("<figure")
    md = md_path.read_text()
    assert "- *a2 figure 0 <b>*: Caption 0 of a2: a < b & c > d." in md


def test_not_run_rows_show_their_reason_and_fix(result, tmp_path):
    html_path, md_path = write_report(result, None, tmp_path)
    assert "Not run: torchattacks is not installed. Fix: pip install <torchattacks>." in md_path.read_text()
    page = html_path.read_text()
    assert "torchattacks is not installed" in page and "pip install &lt;torchattacks&gt;" in page


def test_html_escapes_everything_from_the_results(result, tmp_path):
    page = write_report(result, None, tmp_path)[0].read_text()
    for raw, escaped in (
        ("passes <ok>", "passes &lt;ok&gt;"),
        ("Statement with <tags> & ampersands.", "Statement with &lt;tags&gt; &amp; ampersands."),
        ("side <condition>", "side &lt;condition&gt;"),
        ("Needs a <package>.", "Needs a &lt;package&gt;."),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ):
        assert escaped in page and raw not in page


def test_report_figures_are_written_as_300_dpi_png_svg_and_pdf(tmp_path):
    from PIL import Image

    from robinherit.reproduce.figures import plt, png
    from robinherit.reproduce.report import write_figure_files
    from robinherit.reproduce.spec import Figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    files = write_figure_files([Figure("Claim 3: inheritance", png(fig), "a caption")], tmp_path)
    assert [f.name for f in files] == ["01-claim-3-inheritance.png", "01-claim-3-inheritance.svg",
                                       "01-claim-3-inheritance.pdf"]  # fmt: skip
    assert Image.open(files[0]).info["dpi"][0] == pytest.approx(300, abs=1)
    assert files[2].read_bytes()[:5] == b"%PDF-" and b"<svg" in files[1].read_bytes()[:2000]
