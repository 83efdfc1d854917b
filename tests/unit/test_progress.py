"""mlflow_ext.progress: plain lines where stderr is a log, one redrawn line on a terminal, nothing for short
work, and nothing ever on stdout."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time

import pytest

from mlflow_ext import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_with_counts_and_an_end_line():
    log = io.StringIO()
    with progress.task(
        "hashing data", total=4096, unit="bytes", stream=log, delay=0, interval=0, tick=0
    ) as bar:
        for _ in range(4):
            bar.advance(1024)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "hashing data ..."
    assert lines[1].startswith("hashing data: 1.0 KiB of 4.0 KiB (25%), ")
    assert lines[4].startswith("hashing data: 4.0 KiB of 4.0 KiB (100%), ")
    assert re.fullmatch(r"hashing data: done in \d+\.\d s, 4\.0 KiB", lines[-1]), lines[-1]
    assert len(lines) == 6 and text.endswith("\n")


def test_a_log_gets_at_most_one_line_per_interval():
    log = io.StringIO()
    with progress.task(
        "checking files", total=10_000, unit="files", stream=log, delay=0, interval=3600
    ) as bar:
        for _ in range(10_000):
            bar.advance()
    assert log.getvalue().splitlines()[0] == "checking files ..."
    assert re.fullmatch(r"checking files: done in \d+\.\d s, 10,000 files", log.getvalue().splitlines()[1])
    assert len(log.getvalue().splitlines()) == 2


def test_short_work_prints_nothing():
    log = io.StringIO()
    with progress.task("hashing data", total=10, stream=log, delay=3600) as bar:
        bar.advance(10)
    assert log.getvalue() == ""


def test_notes_show_what_the_work_is_doing():
    log = io.StringIO()
    with progress.task("building", unit="packages", stream=log, delay=0, interval=0, tick=0) as bar:
        bar.advance()
        bar.note("Collecting numpy==2.1.0")
    lines = log.getvalue().splitlines()
    assert re.fullmatch(r"building: 1 packages, \d+\.\d s, Collecting numpy==2\.1\.0", lines[2]), lines


def test_work_that_counts_nothing_still_shows_it_is_alive():
    log = io.StringIO()
    with progress.task("creating the venv", stream=log, delay=0.2, interval=0.2, tick=0.05):
        deadline = time.monotonic() + 10
        while "creating the venv ..." not in log.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = log.getvalue().splitlines()
    assert lines[0] == "creating the venv ...", lines
    assert re.fullmatch(r"creating the venv: done in \d+\.\d s", lines[-1]), lines


def test_a_failure_ends_the_line_saying_so():
    log = io.StringIO()
    with pytest.raises(RuntimeError), progress.task("pip install", stream=log, delay=0, tick=0):
        raise RuntimeError("pip exited 1")
    assert re.fullmatch(r"pip install: failed after \d+\.\d s", log.getvalue().splitlines()[-1])


def test_a_terminal_gets_one_line_redrawn_and_ended():
    tty = Terminal()
    with progress.task("hashing data", total=100, stream=tty, delay=0, interval=0, tick=0) as bar:
        for _ in range(4):
            bar.advance(25)
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), "one line, redrawn, ended once"
    assert text.count("\r") == 6  # the start, four updates, the end
    assert "[" + "#" * 24 + "] 100 of 100 (100%)" in text
    assert re.search(r"\rhashing data: done in \d+\.\d s, 100 *\n$", text)


def test_updates_from_many_threads_are_all_counted():
    log = io.StringIO()
    with progress.task("hashing", total=8000, stream=log, delay=0, interval=0, tick=0) as bar:
        threads = [threading.Thread(target=lambda: [bar.advance() for _ in range(1000)]) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert bar.count == 8000
    assert log.getvalue().splitlines()[-1].endswith(", 8,000")


def test_the_module_imports_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules); import mlflow_ext.progress; "
        "print(' '.join(sorted(m for m in set(sys.modules) - before if not m.startswith('mlflow_ext'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    third_party = [m for m in loaded.stdout.split() if m.split(".")[0] not in sys.stdlib_module_names]
    assert third_party == []


# --- the long work that reports through it ----------------------------------------------------------------


@pytest.fixture
def eager(monkeypatch):
    """Every task shows at once and on every update, as a long one would over minutes."""
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.0)
    monkeypatch.setattr(progress, "TICK_SECONDS", 0.0)


def _plain(text: str) -> list[str]:
    assert "\r" not in text and "\x1b" not in text, f"terminal control in a log: {text!r}"
    return text.splitlines()


def test_fingerprinting_a_folder_reports_bytes_hashed_and_rows_counted(eager, capsys, tmp_path):
    from mlflow_ext import data

    folder = tmp_path / "table"
    folder.mkdir()
    for part in range(3):
        (folder / f"part-{part}.csv").write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(1000)))
    result = data.fingerprint(folder)
    assert result.rows == 3000
    lines = _plain(capsys.readouterr().err)
    assert lines[0] == f"hashing 3 files in {folder} ..."
    assert any(line.startswith(f"hashing 3 files in {folder}: ") and "(100%)" in line for line in lines)
    hashing = [line for line in lines if line.startswith("hashing")]
    size = f"{result.bytes / 1024:.1f} KiB"
    assert re.fullmatch(rf"hashing 3 files in {folder}: done in \d+\.\d s, {size}", hashing[-1]), hashing
    assert re.fullmatch(r"counting the rows of 3 csv file\(s\): done in \d+\.\d s, 3,000 rows", lines[-1])


def test_fingerprinting_short_work_prints_nothing(capsys, tmp_path):
    from mlflow_ext import data

    (tmp_path / "small.csv").write_text("a\n1\n")
    data.fingerprint(tmp_path / "small.csv")
    assert capsys.readouterr().err == ""


def test_the_venv_build_logs_everything_and_shows_pips_milestones(eager, tmp_path):
    from mlflow_ext.stages.deploy.local import _run_logged

    pip = tmp_path / "pip.py"
    pip.write_text(
        "print('Looking in indexes: https://pypi.org/simple')\nprint('Collecting numpy==2.1.0')\n"
        "print('  Downloading numpy-2.1.0.whl (16.3 MB)')\nprint('Collecting pandas==2.2.3')\n"
        "print('Installing collected packages: numpy, pandas')\n"
        "print('Successfully installed numpy pandas')\n"
    )
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nprint('ERROR: no')\nsys.exit(3)\n")
    stream = io.StringIO()
    log_path = tmp_path / "install.log"
    with open(log_path, "wb") as log, progress.task("building", unit="packages", stream=stream) as bar:
        assert _run_logged([sys.executable, str(pip)], log, bar) == 0
        assert _run_logged([sys.executable, str(failing)], log, bar) == 3
    assert "Downloading numpy" in log_path.read_text() and "ERROR: no" in log_path.read_text()
    lines = _plain(stream.getvalue())
    assert any(line.endswith("Collecting numpy==2.1.0") for line in lines)
    assert any(
        line.startswith("building: 2 packages, ") and "Successfully installed" in line for line in lines
    )
    assert not any("Downloading" in line or "Looking in indexes" in line for line in lines)
    assert re.fullmatch(r"building: done in \d+\.\d s, 2 packages", lines[-1])


def test_gocd_generate_reports_files_on_stderr_and_json_stays_alone_on_stdout(eager, tmp_path):
    import json

    from click.testing import CliRunner

    from mlflow_ext.cli import main
    from tests.unit.test_gocd_generate import ENTRY, _write_catalog

    entries = [{**ENTRY, "name": f"model-{n}", "deploy": {"target": "local"}} for n in range(250)]
    path = _write_catalog(tmp_path / "models.yaml", entries)
    out = tmp_path / "out"
    args = ["gocd", "generate", "--catalog", str(path), "--out", str(out), "--output", "json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False, standalone_mode=False)
    assert json.loads(result.stdout)["files"] == 250
    assert len(result.stdout.splitlines()) == 1
    lines = _plain(result.stderr)
    assert lines[0] == "gocd generate: writing and checking files ..."
    assert "gocd generate: writing and checking files: 250 of 250 files (100%), " in result.stderr
    assert re.fullmatch(r"gocd generate: writing and checking files: done in \d+\.\d s, 250 files", lines[-1])


def test_bench_names_each_section_and_its_time(capsys, tmp_path, monkeypatch):
    from tests.bench.__main__ import run_sections

    package = tmp_path / "quickbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text(
        "def run(results):\n    print('first measuring')\n    return [{'section': 'first'}]\n"
    )
    (package / "second.py").write_text("def run(results):\n    return [{'section': 'second'}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = run_sections(["first", "second"], tmp_path, package="quickbench")
    assert rows == [{"section": "first"}, {"section": "second"}]
    captured = capsys.readouterr()
    assert captured.out == "first measuring\n"
    lines = _plain(captured.err)
    assert lines[0] == "bench 1/2: first ..."
    assert re.fullmatch(r"bench 1/2: first: done in \d+\.\d s", lines[1])
    assert lines[2] == "bench 2/2: second ..."
    assert re.fullmatch(r"bench 2/2: second: done in \d+\.\d s", lines[3])


def test_gocd_generate_counts_the_registered_models_it_reads(eager, tmp_path):
    import json

    from click.testing import CliRunner
    from mlflow import MlflowClient

    from mlflow_ext.cli import main
    from tests.unit.test_gocd_generate import ENTRY, _write_catalog

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    for name in ("iris-classifier", "churn", "fraud"):
        client.create_registered_model(name)
    path = _write_catalog(tmp_path / "models.yaml", [ENTRY])
    args = ["gocd", "generate", "--from-registry", "--catalog", str(path), "--out", str(tmp_path / "out")]
    args += ["--tracking-uri", registry, "--output", "json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False, standalone_mode=False)
    assert json.loads(result.stdout)["models"] == 1
    reading = [line for line in _plain(result.stderr) if line.startswith("gocd generate: reading")]
    assert reading[0] == "gocd generate: reading registered models ..."
    assert re.fullmatch(r"gocd generate: reading registered models: done in \d+\.\d s, 3 models", reading[-1])
