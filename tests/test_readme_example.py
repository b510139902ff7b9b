"""The README's Python example runs as printed: the ```python block after the comment
``<!-- example: tested by tests/test_readme_example.py -->`` is taken out of README.md, its config path
replaced by the tiny experiment's (``write_tiny_config``, everything under tmp_path), and run in a fresh
interpreter from an empty folder; it must print the PixCorr that its ``metrics.json`` holds and the shape of
the decoded features it reads from the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import CLI_ENV, ROOT, TINY, write_tiny_config

MARK = "<!-- example: tested by tests/test_readme_example.py -->"
CONFIG_LINE = re.compile(r'load_config\("(configs/[\w./-]+\.yaml)"')


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    assert text.count(MARK) == 1, f"README.md should hold {MARK} once"
    block = re.match(r"\s*```python\n(.*?)\n```", text.split(MARK, 1)[1], re.S)
    assert block, f"no ```python block right after {MARK}"
    return block.group(1)


def test_the_readme_example_names_a_shipped_config_and_stays_short():
    code = readme_example()
    configs = CONFIG_LINE.findall(code)
    assert len(configs) == 1 and (ROOT / configs[0]).is_file(), configs
    assert len(code.splitlines()) <= 14


def test_the_readme_example_runs_and_prints_what_its_run_wrote(tmp_path):
    config = write_tiny_config(tmp_path, tmp_path / "data")
    code = CONFIG_LINE.sub(f'load_config("{config}"', readme_example())
    script = tmp_path / "example.py"
    script.write_text(code)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=CLI_ENV, cwd=elsewhere,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "results" / TINY["experiment"] / "metrics.json").read_text())
    pixcorr = metrics["reconstruction"]["sub-01"]["wgan_gp"]["pixcorr"]
    printed = re.search(r"wgan_gp PixCorr: ([-\d.]+)", r.stdout)
    assert printed and abs(float(printed.group(1)) - pixcorr) < 5e-4, r.stdout
    n_test = TINY["simulation"]["n_test_natural"]
    assert f"({n_test}, 4096)" in r.stdout, r.stdout  # fc7's decoded features: one row per test image
    assert not list(elsewhere.iterdir())  # every path came from the config
