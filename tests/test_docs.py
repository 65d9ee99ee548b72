"""The code of docs/extending.md runs as written: each extension is one registry entry, and the new name then
works through the whole pipeline. A block that opens with ``# file: NAME`` is a file the page asks the reader to
save: it is written to NAME, and the blocks after it use it."""

from __future__ import annotations

import re
from pathlib import Path

from robinherit.data import datasets
from robinherit.evaluation import robust as evaluation
from robinherit.models import encoder, units
from robinherit.reproduce import CLAIMS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_md_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8  # shared settings, a unit, a data set, an attack, an encoder (3), a claim
    # the examples register at run time; give every registry back as it was afterwards
    registries = (units.UNITS, datasets.LOADERS, evaluation.EVAL_ATTACKS, encoder.ENCODERS, CLAIMS)
    saved = [(r, dict(r)) for r in registries]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        for block in blocks:
            first, _, rest = block.partition("\n")
            if first.startswith("# file: "):
                Path(first.removeprefix("# file: ")).write_text(rest)
                continue
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        for registry, before in saved:
            registry.clear()
            registry.update(before)
    out = capsys.readouterr().out
    for name in ("neg_relu:", "blobs:", "fgsm:", "mlp:", "mlp sweep:", "claim 8:"):
        assert name in out
