"""A run directory may be hostile: names from its manifest never steer where bundle writes, links and odd file
names are refused with the path, and two runs that would share a directory are refused instead of overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlps_slurm.bundle import BundleError, check_bundle, make_bundle
from mlps_slurm.verify import verify_run
from tests.unit import rules_corpus as corpus
from tests.unit.rules_corpus import T0


def rewrite(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(data))


def everything_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("field,value", [
    ("request__model", "../../../../elsewhere"), ("request__model", "/tmp/elsewhere"),
    ("request__model", "llama3-8b\nx"), ("run_id", "../../elsewhere"), ("run_id", "a/b"), ("run_id", ".."),
])
def test_a_hostile_name_in_the_manifest_makes_the_run_unusable_and_nothing_is_written(tmp_path, field, value):
    d = tmp_path / "runs"
    run = corpus.checkpoint_run(d, run_id="ckpt")
    rewrite(run / "manifest.json", **{field: value})
    before = everything_under(tmp_path)
    verdict = verify_run(run)
    assert not verdict.usable and any("is not a plain name" in p for p in verdict.problems), verdict.problems
    with pytest.raises(BundleError, match="not a plain name"):
        make_bundle([run], "acme", "sys1", tmp_path / "sub", allow_invalid=True)
    assert everything_under(tmp_path) == before  # no file anywhere, inside or outside tmp_path's runs


@pytest.mark.parametrize("where", ["raw/checkpointing/llama3-8b/engine.json", "raw"])
def test_links_in_the_results_are_refused_by_verify_and_bundle_alike(tmp_path, where):
    d = tmp_path / "runs"
    run = corpus.checkpoint_run(d, run_id="ckpt")
    target = run / where
    moved = tmp_path / "elsewhere" / target.name
    moved.parent.mkdir()
    target.rename(moved)
    target.symlink_to(moved)
    verdict = verify_run(run)
    assert not verdict.usable and any("symbolic link" in p for p in verdict.problems)
    with pytest.raises(BundleError, match="symbolic link"):
        make_bundle([run], "acme", "sys1", tmp_path / "sub", allow_invalid=True)
    assert not (tmp_path / "sub").exists()


def test_a_file_name_with_a_newline_is_named_and_nothing_is_bundled(tmp_path):
    d = tmp_path / "runs"
    run = corpus.checkpoint_run(d, run_id="ckpt")
    (run / "logs" / "odd\nname.out").write_text("x")
    with pytest.raises(BundleError, match=r"odd\\nname.out.*not a plain path inside the bundle; rename or remove"):
        make_bundle([run], "acme", "sys1", tmp_path / "sub")
    assert not (tmp_path / "sub").exists() and not list(tmp_path.glob(".sub.staging-*"))


def test_two_runs_started_in_the_same_second_are_refused_not_merged(tmp_path):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="r1", start=T0)
    corpus.checkpoint_run(d, run_id="r2", start=T0)
    with pytest.raises(BundleError, match="two files map to this path.*run r1 and run r2.*bundle them separately"):
        make_bundle([d / "r1", d / "r2"], "acme", "sys1", tmp_path / "sub", allow_invalid=True)
    assert not (tmp_path / "sub").exists()
    one = make_bundle([d / "r1"], "acme", "sys1", tmp_path / "sub")
    assert check_bundle(one.tarball).ok


@pytest.mark.parametrize("cut", [4, 8, 1])
def test_a_tarball_cut_in_its_gzip_trailer_fails_the_check(tmp_path, cut):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="r1")
    result = make_bundle([d / "r1"], "acme", "sys1", tmp_path / "sub")
    assert check_bundle(result.tarball).ok
    data = result.tarball.read_bytes()
    short = tmp_path / "short.tar.gz"
    short.write_bytes(data[:-cut])  # the CRC/length trailer (8 bytes) loses its last bytes
    problems = check_bundle(short).problems
    assert any("unreadable or truncated" in p for p in problems), problems


def test_check_of_the_bundle_directory_catches_a_changed_byte_and_an_added_file(tmp_path):
    from mlps_slurm.bundle import check_tree

    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="r1")
    result = make_bundle([d / "r1"], "acme", "sys1", tmp_path / "sub")
    assert check_tree(result.tree).ok and check_tree(result.tree).files_checked > 5
    engine = next(result.tree.rglob("engine.json"))
    data = bytearray(engine.read_bytes())
    data[10] ^= 1
    engine.write_bytes(bytes(data))
    problems = check_tree(result.tree).problems
    assert any("engine.json: SHA-256 mismatch" in p for p in problems), problems
    engine.write_bytes(bytes(data[:10]) + bytes([data[10] ^ 1]) + bytes(data[11:]))
    assert check_tree(result.tree).ok
    (result.tree / "extra.txt").write_text("x")
    (engine.parent / "link.json").symlink_to(engine)
    problems = check_tree(result.tree).problems
    assert any("extra.txt: not covered by SHA256SUMS" in p for p in problems)
    assert any("link.json: not a regular file" in p for p in problems)
