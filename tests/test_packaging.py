"""What a wheel carries besides the code: the licence it declares, a citation for both papers."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_declared_licence_is_the_shipped_one():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text and "END OF TERMS AND CONDITIONS" in text


def test_the_citation_names_both_papers():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "Apache-2.0"
    titles = {ref["title"]: ref for ref in citation["references"]}
    mlp_spe = titles["Efficient Deep Spiking Multi-Layer Perceptrons with Multiplication-Free Inference"]
    snn_mlp = titles["Brain-inspired Multilayer Perceptron with Spiking Neurons"]
    assert mlp_spe["year"] == 2024 and mlp_spe["authors"][0]["family-names"] == "Li"
    assert {"value": "arXiv:2306.12465", "type": "other"} in mlp_spe["identifiers"]
    assert (
        snn_mlp["year"] == 2022 and {"value": "arXiv:2203.14679", "type": "other"} in snn_mlp["identifiers"]
    )


def test_each_optional_command_has_its_extra_and_dev_has_them_all():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: {r.split(">")[0] for r in v} for k, v in project["optional-dependencies"].items()}
    assert extras["onnx"] == {"onnx", "onnxruntime"} and extras["tensorboard"] == {"tensorboard"}
    assert not any(r.startswith("tensorboard") for r in project["dependencies"])  # optional now
    assert extras["onnx"] | extras["tensorboard"] <= extras["dev"]  # `make install` gets everything


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    from spikemlp.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    rc = main(["export", "onnx", "snn_mlp_xt_cifar", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "pip install 'spikemlp[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_training_without_tensorboard_says_once_how_to_get_it(monkeypatch, tmp_path, capsys):
    from spikemlp.train.run_log import RunLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    log = RunLog(tmp_path, active=True)
    out = capsys.readouterr().out
    assert log.tb is None and out.count("spikemlp[tensorboard]") == 1
    assert (tmp_path / "metrics.csv").exists()  # metrics still go somewhere


def test_the_readme_quotes_the_benchmarks_figures():
    readme, benchmarks = (ROOT / "README.md").read_text(), (ROOT / "BENCHMARKS.md").read_text()
    # spike kernels (mlp_spe_t 224), projections kept, memory_saving=False, the speedrun's images/s
    for figure in ["1.28 s (3.13 img/s)", "2.96 s (1.35 img/s)", "projections not recomputed 11.3 s, 3.4 GB"]:
        assert figure in benchmarks
    assert "9-28% more training images/s for 1.4-2.6x the memory" in benchmarks
    assert "486.7 training images/s" in benchmarks and "400.6 images/s" in benchmarks  # 1.21x
    assert "About 2.3x faster inference" in readme and "1.28 s against 2.96 s" in readme
    assert "11.3 s against\n  11.2-12.0 s" in readme and "9-28% more training images/s" in readme
    assert "8% faster" not in readme and "2.2x faster inference" not in readme
