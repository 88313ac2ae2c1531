"""The protos are lint- and format-clean, and the committed stubs are fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients" / "python"
BIN = Path(sys.executable).parent
BUF = BIN / "buf"


def _generated_files(root: Path) -> dict[str, bytes]:
    """Every generated file under ``root/smsgate/v1`` (the hand-written __init__ aside)."""
    base = root / "smsgate" / "v1"
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(base.glob("*_pb2*"))
        if path.is_file()
    }


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        cwd=ROOT,
    )
    fresh = _generated_files(tmp_path)
    committed = _generated_files(COMMITTED)
    assert fresh, "gen_protos.py produced nothing"
    assert sorted(fresh) == sorted(committed), "run `make gen` and commit the result"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run `make gen` and commit the result"


@pytest.mark.parametrize(
    "args", [["lint"], ["format", "--diff", "--exit-code"]], ids=["lint", "format"]
)
def test_buf_is_clean(args: list[str]) -> None:
    done = subprocess.run([str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
