"""The installable project: the `ssl` name shim, entry points, lint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_from_repo(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_import_ssl_keeps_stdlib_tls_api_from_repo_root():
    code = (
        "import ssl, os\n"
        "ctx = ssl.create_default_context()\n"
        "assert isinstance(ctx, ssl.SSLContext), type(ctx)\n"
        "assert ctx.verify_mode == ssl.CERT_REQUIRED\n"
        "assert ssl.OPENSSL_VERSION\n"
        # it is the project's package that answered the import, yet it provides the TLS API
        "assert os.path.dirname(ssl.__file__) == os.path.join(os.getcwd(), 'ssl'), ssl.__file__\n"
        "import ssl.train\n"
        "print('ok')\n"
    )
    res = run_from_repo(sys.executable, "-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_httpx_and_prefect_import_from_repo_root():
    code = (
        "import httpx, prefect, ssl\n"
        "c = httpx.Client(verify=True); c.close()\n"
        "print(prefect.__version__)\n"
    )
    res = run_from_repo(sys.executable, "-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("3.")


def test_python_m_ssl_train_help_from_repo_root():
    res = run_from_repo(sys.executable, "-m", "ssl.train", "--help")
    assert res.returncode == 0, res.stderr
    assert "--manifest" in res.stdout


def test_train_and_embed_run_without_tqdm():
    # a stock PyTorch box need not have tqdm: the commands import, and their bar is silent
    code = ("import sys; sys.modules['tqdm'] = None\n"
            "import ssl.train, ssl.embed\n"
            "from ssl.flags import progress_bar\n"
            "bar = progress_bar(total=3)\n"
            "bar.update(1); bar.set_postfix_str('x'); bar.clear(); bar.refresh(); bar.close()\n"
            "assert bar.disable\n")
    res = run_from_repo(sys.executable, "-c", code)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("script", ["seafloor-train", "seafloor-synth"])
def test_console_scripts_work_from_any_directory(tmp_path, script):
    exe = BIN / script
    assert exe.exists(), f"console script {script} not installed in {BIN}"
    res = run_from_repo(str(exe), "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()


def test_outside_repo_root_stdlib_ssl_wins_and_trainer_has_second_name(tmp_path):
    code = (
        "import ssl, seafloor_ssl.train, sysconfig, os\n"
        "assert os.path.dirname(ssl.__file__) == sysconfig.get_paths()['stdlib'], ssl.__file__\n"
        "print(seafloor_ssl.train.__name__)\n"
    )
    res = run_from_repo(sys.executable, "-c", code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "seafloor_ssl.train"


def test_ruff_is_clean():
    ruff = BIN / "ruff"
    if not ruff.exists():
        ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the dev extra"
    res = run_from_repo(str(ruff), "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_pipeline_never_imports_prefect_or_torch():
    code = (
        "import sys, pipeline, pipeline.catalog, pipeline.synth, pipeline.reasons\n"
        "bad = [m for m in ('prefect', 'torch', 'torchvision') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = run_from_repo(sys.executable, "-c", code)
    assert res.returncode == 0, res.stderr
