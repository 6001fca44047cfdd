"""Where data is found (flag, $SPIKEMLP_DATA, standard places), the not-found error, and --download
(with a replaced opener: no real network)."""

from __future__ import annotations

import gzip
import io
import socket
import urllib.error

import numpy as np
import pytest
from dataset_writers import idx_bytes, tar_gz_of, write_cifar10

import spikemlp.data.fetch as dl
import spikemlp.data.locations as loc
from spikemlp.data import DataError, find_data_dir, load_split


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An isolated world: cwd = <tmp>/work/repo, HOME = <tmp>/home, system dir = <tmp>/sys, no env var."""
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPIKEMLP_DATA", raising=False)
    monkeypatch.setattr(loc, "SYSTEM_DATA_DIR", tmp_path / "sys")
    return {
        "env": tmp_path / "env",
        "./data": repo / "data",
        "cache": tmp_path / "home" / ".cache" / "spikemlp",
        "system": tmp_path / "sys",
        "shared": tmp_path / "work" / "shared" / "data",
    }


def _fake_cifar(base):
    """Just the files find_data_dir checks for (contents are not read here)."""
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"")
    return folder


def test_search_order(places, monkeypatch):
    order = ["env", "./data", "cache", "system", "shared"]
    folders = {k: _fake_cifar(places[k]) for k in order}
    monkeypatch.setenv("SPIKEMLP_DATA", str(places["env"]))
    for k in order:
        assert find_data_dir("cifar10") == folders[k]
        # remove the winner: the next place in the order must win
        for f in folders[k].iterdir():
            f.unlink()
        folders[k].rmdir()
    with pytest.raises(DataError, match="cifar10 not found"):
        find_data_dir("cifar10")


def test_data_dir_flag_is_searched_alone_and_may_be_the_folder_itself(places, monkeypatch):
    folder = _fake_cifar(places["./data"])
    assert find_data_dir("cifar10", places["./data"]) == folder
    assert find_data_dir("cifar10", folder) == folder
    other = places["env"]
    other.mkdir()
    with pytest.raises(DataError) as err:
        find_data_dir("cifar10", other)  # not silently replaced by the copy in ./data
    assert f"--data-dir: {other}" in str(err.value) and "./data" not in str(err.value)


def test_not_found_lists_every_place_files_and_what_to_do(places, monkeypatch):
    monkeypatch.setenv("SPIKEMLP_DATA", str(places["env"]))
    places["shared"].mkdir(parents=True)
    with pytest.raises(DataError) as err:
        find_data_dir("fashion_mnist")
    msg = str(err.value)
    assert "fashion_mnist not found" in msg and "fashion-mnist or FashionMNIST/raw" in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    lines = msg.splitlines()
    for label, key in (("$SPIKEMLP_DATA", "env"), ("./data", "./data"), ("~/.cache/spikemlp", "cache"),
                       (str(places["system"]), "system"), ("../shared/data", "shared")):  # fmt: skip
        assert any(line.strip().startswith(f"{label}: {places[key]}") for line in lines), label
    # train/eval have no --download flag: the command that fetches it is named
    assert "--data-dir" in msg and "spikemlp data download fashion_mnist" in msg and "--download" not in msg


def test_shared_data_is_only_searched_when_it_exists(places):
    labels = [label for label, _ in loc.search_locations()]
    assert labels == ["./data", "~/.cache/spikemlp", str(places["system"])]
    places["shared"].mkdir(parents=True)
    assert [label for label, _ in loc.search_locations()][-1] == "../shared/data"


def test_debian_fashion_mnist_location(places):
    folder = places["system"] / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).write_bytes(b"")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"")  # plain instead of .gz also counts
    assert find_data_dir("fashion_mnist") == folder


def test_incomplete_folder_names_the_missing_files(places):
    folder = _fake_cifar(places["./data"])
    (folder / "data_batch_4").unlink()
    with pytest.raises(
        DataError, match=r"cifar-10-batches-py is incomplete: missing data_batch_4\. .*data download cifar10"
    ):
        find_data_dir("cifar10")
    # a split that does not need the missing file is fine
    assert find_data_dir("cifar10", split="test") == folder


def test_unknown_name_and_split(places):
    with pytest.raises(DataError, match=r"unknown data set 'cifar11'; known data sets: cifar10, cifar100"):
        find_data_dir("cifar11")
    with pytest.raises(DataError, match=r"unknown split 'dev'"):
        load_split("cifar10", "dev")


# --- --download, with a replaced opener ---------------------------------------------------------------


class _Opener:
    def __init__(self, files: dict[str, bytes]):
        self.files, self.calls = files, []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if url not in self.files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(self.files[url])


def test_download_cifar10_archive_then_load(tmp_path, places, monkeypatch):
    ref = write_cifar10(tmp_path / "src" / "cifar-10-batches-py", per_batch=2, n_test=3)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    opener = _Opener({url: tar_gz_of(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")})
    monkeypatch.setattr(dl, "_urlopen", opener)
    target = tmp_path / "target"
    test = load_split("cifar10", "test", data_dir=target, download=True)
    assert opener.calls == [url]
    assert test.labels.tolist() == ref["test_labels"].tolist()
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(target.glob("*.tar.gz*"))  # archive removed, no partial file left
    load_split("cifar10", "train", data_dir=target, download=True)  # present now: no second download
    assert opener.calls == [url]


def test_download_idx_files_tries_mirrors_and_reports_md5(tmp_path, places, monkeypatch, capsys):
    info = dl.get_info("mnist")
    files = {}
    for item in info.downloads:
        n = 3 if item.filename.startswith("t10k") else 5
        arr = np.arange(n, dtype=np.uint8) if "labels" in item.filename else np.zeros((n, 28, 28), np.uint8)
        files[item.urls[1]] = gzip.compress(idx_bytes(arr))  # only the second mirror answers
    opener = _Opener(files)
    monkeypatch.setattr(dl, "_urlopen", opener)
    folder = dl.download("mnist", tmp_path / "d")
    assert folder == tmp_path / "d" / "mnist"
    assert len(opener.calls) == 8  # each file: first mirror 404, second mirror ok
    assert load_split("mnist", "train", data_dir=tmp_path / "d").labels.tolist() == [0, 1, 2, 3, 4]
    assert "differs from the official" in capsys.readouterr().out


@pytest.mark.parametrize(
    "failure",
    [
        urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_download_without_internet_says_so(tmp_path, places, monkeypatch, failure):
    def offline(url, timeout=None):
        raise failure

    monkeypatch.setattr(dl, "_urlopen", offline)
    with pytest.raises(
        DataError, match=r"could not download cifar-10-python.tar.gz; .*no internet access"
    ) as err:
        load_split("cifar10", "train", data_dir=tmp_path / "d", download=True)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(err.value)
    assert not list((tmp_path / "d").glob("*.part"))


def test_failed_idx_download_leaves_no_empty_folder(tmp_path, places, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(dl, "_urlopen", offline)
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte.gz; .*no internet"):
        dl.download("mnist", tmp_path / "d")
    # An empty mnist/ would make the next search report an "incomplete" folder instead of "not found".
    assert not (tmp_path / "d" / "mnist").exists()
    with pytest.raises(DataError, match="mnist not found"):
        find_data_dir("mnist", tmp_path / "d")


def test_download_corrupt_archive_and_imagenet(tmp_path, places, monkeypatch):
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    monkeypatch.setattr(dl, "_urlopen", _Opener({url: b"<html>captive portal</html>"}))
    with pytest.raises(DataError, match=r"cifar-100-python.tar.gz: cannot unpack .*incomplete or corrupt"):
        dl.download("cifar100", tmp_path / "d")
    with pytest.raises(DataError, match=r"imagenet cannot be downloaded automatically .*image-net.org"):
        dl.download("imagenet", tmp_path / "d")
