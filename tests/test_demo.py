"""The main job: ``python -m rxbot demo`` works offline and leaves its outputs."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET


def test_demo_runs_offline_and_leaves_svg_sqlite_and_jsonl(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rxbot", "demo", "--out", str(tmp_path),
                           "--ticks", "4", "--delay", "0.05"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    quotes = [line for line in proc.stdout.splitlines() if line.startswith("BTC")]
    assert len(quotes) == 4
    with sqlite3.connect(tmp_path / "rxbot-demo.db") as conn:
        rows = conn.execute("select usd, eur from prices").fetchall()
    assert len(rows) == 4 and all(usd > 0 and eur > 0 for usd, eur in rows)
    lines = (tmp_path / "rxbot-demo.jsonl").read_text().splitlines()
    assert [round(json.loads(line)["usd"], 2) for line in lines] == [round(r[0], 2) for r in rows]
    root = ET.parse(tmp_path / "rxbot-demo.svg").getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for label in ("Timer(0.05s, max_time=4)", "HttpLoader", "parse", "show", "Fork"):
        assert label in texts
    # drawn after the run: with its numbers (4 ticks through every step)
    assert "in=1 out=4" in texts and "in=4 out=4" in texts
    assert not (tmp_path / "rxbot-demo.dot").exists()
    assert "rxbot-demo.svg" in proc.stdout and "(4 rows)" in proc.stdout


def test_demo_rejects_bad_arguments_with_usage():
    proc = subprocess.run([sys.executable, "-m", "rxbot", "demo", "--ticks", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
