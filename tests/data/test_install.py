"""Installing a dataset folder beside its manifest (reid.data.install) and the CLI verbs that do it."""

import json

import pytest

from reid.cli import main
from reid.data import synthetic
from reid.data.install import ManifestError, check_manifest, manifest_path, write_manifest

TINY = dict(seed=7, train_ids=3, test_ids=3, cameras=2, cameras_per_id=[2, 2], images_per_camera=[1, 1],
            distractors=1, junk=1, multi_query_images=[1, 1], height=16, width=8)


def test_manifest_path_sits_beside_the_folder(tmp_path):
    assert manifest_path(tmp_path / "data" / "market1501") == tmp_path / "data" / "market1501.manifest.json"


def test_a_folder_changed_after_its_install_is_caught(tmp_path):
    data = tmp_path / "ds"
    (data / "query").mkdir(parents=True)
    (data / "query" / "a.jpg").write_bytes(b"12345")
    manifest = manifest_path(data)
    record = write_manifest(data, manifest, {"synthetic": {}})
    assert record["files"] == 1 and check_manifest(data, manifest) == record
    (data / "query" / "a.jpg").write_bytes(b"123")  # edited by hand
    with pytest.raises(ManifestError, match=r"ds changed since it was installed: 1 files .* says 1"):
        check_manifest(data, manifest)
    (data / "query" / "a.jpg").unlink()
    with pytest.raises(ManifestError, match="0 files"):
        check_manifest(data, manifest)
    manifest.write_text("{")
    with pytest.raises(ManifestError, match="unreadable dataset manifest"):
        check_manifest(data, manifest)


def test_synthesize_with_a_manifest_replaces_the_previous_dataset_only_when_the_new_one_is_complete(tmp_path,
                                                                                                  monkeypatch):
    out, manifest = tmp_path / "data" / "synthetic", tmp_path / "data" / "synthetic.manifest.json"
    args = ["synthesize", "--out", str(out), "--manifest", str(manifest)]
    assert main([*args, "--params", json.dumps(TINY)]) == 0
    first = json.loads(manifest.read_text())
    assert first["files"] > 0 and check_manifest(out, manifest) == first
    (out / "query" / "keep-me.txt").write_text("x")
    manifest.unlink()  # what Snakemake does before it reruns the job
    # a run that fails half-way through generating leaves the previous folder as it was
    def dies_half_way(root, **kwargs):
        (root / "query").mkdir(parents=True)
        (root / "query" / "0001_c1s1_000001_00.jpg").write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(synthetic, "synthesize", dies_half_way)
    assert main([*args, "--params", json.dumps(TINY)]) == 1
    monkeypatch.undo()
    assert (out / "query" / "keep-me.txt").exists() and not manifest.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no work folder left
    # a run that succeeds replaces it whole
    assert main([*args, "--params", json.dumps({**TINY, "seed": 8})]) == 0
    assert not (out / "query" / "keep-me.txt").exists() and check_manifest(out, manifest)["files"] == first["files"]


def test_synthesize_without_a_manifest_still_refuses_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "synthetic"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["synthesize", "--out", str(out), "--params", json.dumps(TINY)]) == 1
    assert f"{out}: already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
