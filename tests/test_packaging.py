"""What a wheel carries besides the code: the licence it declares, a citation for both papers."""

from __future__ import annotations

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
