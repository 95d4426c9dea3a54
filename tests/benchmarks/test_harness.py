"""benchmarks/harness.py: the --out naming, the one result-file shape, the CPU line; and every script in
benchmarks/ goes through it (no benchmark is run here)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from coreg_edge.cpu import describe_machine

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402  (benchmarks/ is no package: scripts import it from their own folder)


def test_default_out_is_named_after_the_benchmark_under_results():
    p = harness.parser("doc", name="reject_effect")
    p.add_argument("--seeds", default="0,1,2")
    assert p.parse_args([]).out == ROOT / "benchmarks" / "results" / "reject_effect.json"
    assert p.parse_args(["--out", "x/y.json"]).out == Path("x/y.json")  # as given: relative to the cwd


def test_default_out_with_a_suffix_keeps_the_existing_file_names():
    p = harness.parser("doc", name="train_cost", suffix="{backbone}_{image_size}px")
    p.add_argument("--backbone", default="test_resnet")
    p.add_argument("--image-size", type=int, default=8)
    out = p.parse_args([]).out
    assert out == BENCHMARKS / "results" / "train_cost_test_resnet_8px.json" and out.exists()
    assert (
        p.parse_args(["--backbone", "resnet18", "--image-size", "32"]).out.name
        == "train_cost_resnet18_32px.json"
    )

    def runs(args):
        return "+".join(args.run)

    q = harness.parser("doc", name="int8_targets", suffix=runs, threads=2)
    q.add_argument("--run", action="append")
    args = q.parse_args(["--run", "demo", "--run", "r18"])
    assert args.out.name == "int8_targets_demo+r18.json" and args.threads == 2
    assert "int8_targets_<runs>.json" in q.format_help()


def test_threads_only_where_asked():
    assert "--threads" not in harness.parser("doc", name="a").format_help()
    assert harness.parser("doc", name="a", threads=3).parse_args([]).threads == 3


def test_result_file_has_the_common_keys_then_the_scripts_own(tmp_path):
    p = harness.parser("doc", name="image_store")
    p.add_argument("--work", type=Path, default=tmp_path)
    p.add_argument("--runs", nargs="+", type=Path, default=[tmp_path / "a"])
    args = p.parse_args(["--out", str(tmp_path / "deep" / "r.json")])
    path = harness.write_result(args.out, {"rows": [{"n": 1, "s": float("nan")}], "batch_size": 8}, args)
    assert path == tmp_path / "deep" / "r.json"
    data = json.loads(path.read_text())
    assert list(data) == ["benchmark", "cpu", "args", "started", "rows", "batch_size"]
    assert data["benchmark"] == "image_store" and data["cpu"] == describe_machine()
    assert data["args"] == {
        "out": str(tmp_path / "deep" / "r.json"),
        "work": str(tmp_path),
        "runs": [str(tmp_path / "a")],
    }
    assert data["rows"] == [{"n": 1, "s": None}] and data["batch_size"] == 8
    assert data["started"][:4].isdigit() and "T" in data["started"]
    assert [f.name for f in path.parent.iterdir()] == ["r.json"]  # no temporary left beside it


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    p = harness.parser("doc", name="quality")
    args = p.parse_args(["--out", str(tmp_path / "r.json")])
    harness.write_result(args.out, {"results": [1]}, args)
    before = args.out.read_text()
    with pytest.raises(TypeError):
        harness.write_result(args.out, {"results": [object()]}, args)
    assert args.out.read_text() == before and [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_machine_line_names_the_cpu_and_threads():
    line = harness.machine_line(3)
    assert line == f"CPU: {describe_machine()}; threads 3"
    assert "load average" in harness.machine_line(load=True) and "load average" not in harness.machine_line()


def _scripts() -> list[Path]:
    return sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "harness.py")


def test_there_are_scripts():
    assert len(_scripts()) >= 14


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.name)
def test_every_script_goes_through_the_harness(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    imported = {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "harness"
        for a in n.names
    }
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for name in ("parser", "machine_line", "write_result"):
        assert name in imported and name in called, f"{script.name} does not use harness.{name}"
    # no parser, CPU description or result file of its own
    assert "ArgumentParser" not in attributes, f"{script.name} builds its own ArgumentParser"
    assert "describe_machine" not in called | attributes, f"{script.name} names the CPU itself"
    to_harness = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "write_result"
                  for a in n.args[:1]}  # fmt: skip
    outs = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "out"]
    assert outs and all(id(n) in to_harness for n in outs), (
        f"{script.name} uses --out other than in write_result"
    )
