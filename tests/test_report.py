"""`optimize report`: one self-contained HTML file with every plot, loaded in headless Chromium."""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import run_cli
from optimizer.report import PLOTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="chromium is not installed (bash scripts/setup.sh --test installs it)")


def chromium(tmp_path, *args, timeout=120):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.integration  # headless Chromium, on a run of the embedded model
@needs_chromium
def test_report_is_self_contained_and_renders_every_plot_in_chromium(sst2_run, tmp_path):
    db = sst2_run.run / "study.db"
    before = sha(db)
    out = tmp_path / "report.html"
    r = run_cli("report", str(sst2_run.run), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    page = out.read_text()
    # self-contained: no network references (scripts, styles, images, fonts)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    for pid in PLOTS:
        assert f'id="{pid}"' in page, pid
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert 'id="candidates-table"' in page and 'id="summary-table"' in page
    # the study database is only read: still the same file, still loadable (optuna-dashboard reads it the same way)
    assert sha(db) == before
    assert optuna.get_all_study_names(f"sqlite:///{db}")
    # Chromium: the inline script ran after load and every image decoded; no console errors
    dom = chromium(tmp_path, "--dump-dom", f"file://{out}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-images-ok="{len(PLOTS)}"' in dom.stdout and 'data-images-failed="0"' in dom.stdout
    assert f"{len(PLOTS)} of {len(PLOTS)} plots rendered" in dom.stdout
    for pid in PLOTS:
        assert f'id="{pid}"' in dom.stdout
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    shot = tmp_path / "report.png"
    s = chromium(tmp_path, "--window-size=1200,3400", "--hide-scrollbars", f"--screenshot={shot}", f"file://{out}")
    assert s.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000, s.stderr[-2000:]


def test_report_of_an_unfinished_run_is_one_line(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "running"}')
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "summary.json" in r.stderr
