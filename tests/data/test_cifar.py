"""CIFAR-10's binary version: the reader, its refusals, the sources, the cache and the CLI.

Every archive here is small and written by the test (:mod:`support.cifar`); the spec swapped in
pins its digest, so the same code path checks it as it checks the canonical archive.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from support.cifar import FOLDER, META, RECORD, make_records, record_bytes, sha256, write_tar

from stablecnn.cli import main
from stablecnn.data import cifar, fetch_dataset, load_dataset, specs, verify_dataset
from stablecnn.errors import ArchiveError, ChecksumError, SourceError


def assert_split(result, expected):
    images, labels = result
    assert images.dtype == np.uint8 and images.shape == (len(expected[0]), 3, 32, 32)
    assert labels.dtype == np.uint8 and labels.shape == (len(expected[0]),)
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])


def no_mirrors(monkeypatch, tiny_cifar):
    spec = dataclasses.replace(tiny_cifar.spec, mirrors=())
    monkeypatch.setitem(specs.SPECS, "cifar10", spec)
    return spec


# --- the pinned spec ---------------------------------------------------------------------------


def test_the_canonical_archive_is_pinned():
    spec = specs.CIFAR10
    assert spec.sha256 == "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    assert spec.size == 170_052_171 and spec.archive_name == "cifar-10-binary.tar.gz"
    assert spec.mirrors[0] == "https://www.cs.toronto.edu/~kriz/"
    assert spec.classes[0] == "airplane" and spec.classes[-1] == "truck"
    assert spec.input_shape == (3, 32, 32) and spec.record_bytes == 3073
    batches = [m for m in spec.members if m.split != "meta"]
    assert [m.basename for m in batches] == [
        *(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
    ]
    assert all(m.count == 10_000 and m.size == 30_730_000 for m in batches)
    assert "cifar10" in specs.SPECS and specs.MNIST.input_shape == (1, 28, 28)


# --- reading -----------------------------------------------------------------------------------


def test_archive_in_data_dir_is_read_in_place(tiny_cifar, cache_root):
    train = load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, quiet=True)
    assert_split(train, tiny_cifar.train)  # the five batch files, in order
    assert_split(load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir), tiny_cifar.test)
    assert not cache_root.exists()  # a folder the user names is read, not copied


def test_records_hold_the_red_green_and_blue_planes_row_major():
    spec = specs.CIFAR10
    record = np.arange(RECORD, dtype=np.int64) % 251  # label 0, then distinct-ish pixels
    record[0] = 7
    images, labels = cifar.records_to_arrays([("x", record.astype(np.uint8).tobytes())], spec)
    assert labels.tolist() == [7]
    pixels = record[1:].astype(np.uint8)
    np.testing.assert_array_equal(images[0, 0, 0, :], pixels[:32])  # red, first row
    np.testing.assert_array_equal(images[0, 1, 0, 0], pixels[1024])  # green starts at 1024
    np.testing.assert_array_equal(images[0, 2, 31, 31], pixels[3071])  # last blue pixel


@pytest.mark.parametrize("inner", [False, True])
def test_the_extracted_folder_is_read_with_a_warning(tiny_cifar, cache_root, capsys, inner):
    folder = tiny_cifar.extracted_dir / FOLDER if inner else tiny_cifar.extracted_dir
    assert_split(load_dataset("cifar10", "train", data_dir=folder, quiet=True), tiny_cifar.train)
    err = capsys.readouterr().err
    assert "names, sizes, records and class names are checked, not their bytes" in err
    load_dataset("cifar10", "test", data_dir=folder, quiet=True, verify=False)
    assert capsys.readouterr().err == ""  # --no-verify: the user said these are their own


def test_cache_is_filled_from_a_mirror_then_used(tiny_cifar, cache_root, capsys):
    assert_split(load_dataset("cifar10", "test"), tiny_cifar.test)
    cached = cache_root / "cifar10" / "cifar-10-binary.tar.gz"
    assert cached.read_bytes() == tiny_cifar.archive.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temporary left
    shutil.rmtree(tiny_cifar.mirror)  # from now on only the cache can serve
    assert_split(load_dataset("cifar10", "train", quiet=True), tiny_cifar.train)


def test_a_corrupt_cached_archive_is_reported_and_fetched_again(tiny_cifar, cache_root, capsys):
    load_dataset("cifar10", "test", quiet=True)
    cached = cache_root / "cifar10" / "cifar-10-binary.tar.gz"
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    assert_split(load_dataset("cifar10", "test", quiet=True), tiny_cifar.test)
    err = capsys.readouterr().err
    assert "cached file failed verification" in err and "expected the pinned" in err
    assert cached.read_bytes() == tiny_cifar.archive.read_bytes()


# --- digests -----------------------------------------------------------------------------------


def test_a_wrong_digest_names_the_file_and_both_digests(tiny_cifar, cache_root, monkeypatch):
    no_mirrors(monkeypatch, tiny_cifar)
    images, labels = make_records(3, seed=99)
    own = tiny_cifar.entries(replace={"test_batch.bin": record_bytes(images, labels)})
    write_tar(tiny_cifar.archive, own)
    got = sha256(tiny_cifar.archive)
    with pytest.raises(ChecksumError) as info:
        load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir, quiet=True)
    text = str(info.value)
    assert str(tiny_cifar.archive) in text and got in text and tiny_cifar.spec.sha256 in text
    assert text.startswith("--data-dir: ") and "pass --no-verify" in text
    assert not cache_root.exists()
    # --no-verify: the user's own data in CIFAR-10's format (3 test records instead of 4)
    assert_split(
        load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir, verify=False),
        (images, labels),
    )


def test_a_mirror_serving_other_bytes_caches_nothing(tiny_cifar, cache_root, monkeypatch):
    write_tar(tiny_cifar.mirror / "cifar-10-binary.tar.gz", tiny_cifar.entries()[:-1])
    with pytest.raises(SourceError) as info:
        load_dataset("cifar10", "test", quiet=True)
    assert "SHA-256 is" in str(info.value) and tiny_cifar.spec.sha256 in str(info.value)
    assert not cache_root.exists()  # the download was removed, and the folders made for it


# --- malformed and hostile archives --------------------------------------------------------------


def pinned_to(monkeypatch, tiny_cifar, entries, **spec_changes):
    """Write ``entries`` as the data dir's archive and pin the spec to it (so the digest passes
    and the reader's own checks are what is tested)."""
    write_tar(tiny_cifar.archive, entries)
    spec = dataclasses.replace(
        tiny_cifar.spec, sha256=sha256(tiny_cifar.archive), mirrors=(), **spec_changes
    )
    monkeypatch.setitem(specs.SPECS, "cifar10", spec)


def test_a_member_of_the_wrong_size_is_refused(tiny_cifar, cache_root, monkeypatch):
    short = tiny_cifar.members["data_batch_1.bin"][: 2 * RECORD]  # 2 records, 3 are pinned
    pinned_to(monkeypatch, tiny_cifar, tiny_cifar.entries(replace={"data_batch_1.bin": short}))
    with pytest.raises(ArchiveError) as info:
        load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, quiet=True)
    assert str(info.value) == (
        f"--data-dir: {tiny_cifar.archive}: member {FOLDER}/data_batch_1.bin: 6,146 bytes, "
        f"expected 9,219 (3 records of 3,073 bytes)"
    )


def test_a_truncated_record_is_refused(tiny_cifar, cache_root, monkeypatch):
    cut = tiny_cifar.members["test_batch.bin"][:-100]
    pinned_to(monkeypatch, tiny_cifar, tiny_cifar.entries(replace={"test_batch.bin": cut}))
    with pytest.raises(ArchiveError, match=r"3 records of 3,073 bytes and 2,973 bytes of a trunc"):
        load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir, verify=False)
    folder = tiny_cifar.extracted_dir / FOLDER
    (folder / "test_batch.bin").write_bytes(cut)
    with pytest.raises(ArchiveError, match=r"test_batch.bin: 12,192 bytes is 3 records"):
        load_dataset("cifar10", "test", data_dir=folder, verify=False)


def test_a_truncated_archive_is_refused(tiny_cifar, cache_root, monkeypatch):
    data = tiny_cifar.archive.read_bytes()
    tiny_cifar.archive.write_bytes(data[: len(data) // 2])
    pinned_to_bytes = dataclasses.replace(
        tiny_cifar.spec, sha256=sha256(tiny_cifar.archive), mirrors=()
    )
    monkeypatch.setitem(specs.SPECS, "cifar10", pinned_to_bytes)
    with pytest.raises(ArchiveError, match=r"truncated"):
        load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, quiet=True)
    tiny_cifar.archive.write_bytes(b"not a tar.gz at all")
    with pytest.raises(ArchiveError, match="not a readable tar.gz archive"):
        load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, verify=False)


@pytest.mark.parametrize(
    "extra, fault",
    [
        ([("evil", ("symlink", "/etc/passwd"))], "member 'evil' is a symbolic link"),
        ([(f"{FOLDER}/data_batch_1.bin", ("symlink", "x"))], "is a symbolic link"),
        ([("copy", ("hardlink", f"{FOLDER}/readme.html"))], "member 'copy' is a hard link"),
        ([("../evil.txt", b"x")], "member '../evil.txt' has an absolute path or a '..'"),
        ([(f"{FOLDER}/../../evil.txt", b"x")], "has an absolute path or a '..' component"),
        ([("/tmp/evil.txt", b"x")], "member '/tmp/evil.txt' has an absolute path"),
        ([(f"{FOLDER}/test_batch.bin", b"\x00" * RECORD)], "test_batch.bin appears twice"),
    ],
)
def test_a_hostile_archive_is_refused_and_nothing_is_written(
    tiny_cifar, cache_root, monkeypatch, tmp_path, extra, fault
):
    pinned_to(monkeypatch, tiny_cifar, tiny_cifar.entries(extra=extra))
    before = sorted(p for p in tmp_path.rglob("*"))
    for verify in (True, False):
        with pytest.raises(ArchiveError, match=fault.replace("(", r"\(").replace(".", r"\.")):
            load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, verify=verify)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


def test_a_link_in_place_of_a_member_is_refused(tiny_cifar, cache_root, monkeypatch):
    entries = [
        (name, ("symlink", "/dev/zero") if name.endswith("data_batch_2.bin") else data)
        for name, data in tiny_cifar.entries()
    ]
    pinned_to(monkeypatch, tiny_cifar, entries)
    with pytest.raises(ArchiveError, match="data_batch_2.bin' is a symbolic link"):
        load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, quiet=True)


@pytest.mark.parametrize(
    "change, fault",
    [
        ({"test_batch.bin": bytes([10]) + bytes(RECORD - 1)}, "record 0 has label 10, outside"),
        ({"batches.meta.txt": META.replace(b"cat", b"kitten")}, "names the classes"),
        ({"batches.meta.txt": b"\xff" * 10}, "not ASCII text"),
        ({"batches.meta.txt": b"a\n" * 3000}, "too large for a list of class names"),
    ],
)
def test_bad_labels_and_class_names_are_refused(tiny_cifar, cache_root, monkeypatch, change, fault):
    entries = tiny_cifar.entries(replace=change)
    pinned_to(monkeypatch, tiny_cifar, entries)
    with pytest.raises(ArchiveError, match=fault):
        load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir, verify=False)


def test_a_missing_member_is_named(tiny_cifar, cache_root, monkeypatch):
    entries = [e for e in tiny_cifar.entries() if not e[0].endswith("data_batch_4.bin")]
    pinned_to(monkeypatch, tiny_cifar, entries)
    with pytest.raises(ArchiveError, match=f"has no member {FOLDER}/data_batch_4.bin"):
        load_dataset("cifar10", "train", data_dir=tiny_cifar.data_dir, quiet=True)
    # the test split does not need it
    assert_split(load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir), tiny_cifar.test)


def test_other_regular_members_are_skipped(tiny_cifar, cache_root, monkeypatch):
    """Files the reader does not need (the real archive's readme.html) are skipped unread."""
    extra = [(f"{FOLDER}/notes.bin", bytes(5 * RECORD + 1)), ("other/x.txt", b"hello")]
    pinned_to(monkeypatch, tiny_cifar, tiny_cifar.entries(extra=extra))
    assert_split(load_dataset("cifar10", "test", data_dir=tiny_cifar.data_dir), tiny_cifar.test)


# --- a missing archive ---------------------------------------------------------------------------


def test_a_missing_archive_says_where_to_download_it_and_where_to_put_it(
    tiny_cifar, cache_root, monkeypatch, tmp_path
):
    no_mirrors(monkeypatch, tiny_cifar)
    with pytest.raises(SourceError) as info:
        load_dataset("cifar10", "train", quiet=True)
    text = str(info.value)
    assert text.startswith("could not get cifar10 (cifar-10-binary.tar.gz) from any source")
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in text
    assert "pass --data-dir FOLDER" in text
    assert str(cache_root / "cifar10" / "cifar-10-binary.tar.gz") in text
    assert "(the data cache: $STABLECNN_DATA if set, else ~/.cache/stablecnn" in text
    assert not cache_root.exists()  # no empty folder left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError) as info:
        load_dataset("cifar10", "test", data_dir=empty)
    text = str(info.value)
    assert text.startswith(f"--data-dir: {empty} has neither cifar-10-binary.tar.gz nor the ")
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in text


# --- fetch, verify and the command line --------------------------------------------------------


def test_fetch_copies_a_verified_archive_into_the_cache(tiny_cifar, cache_root, monkeypatch):
    no_mirrors(monkeypatch, tiny_cifar)
    served = fetch_dataset("cifar10", data_dir=tiny_cifar.data_dir, quiet=True)
    assert served == {"cifar-10-binary.tar.gz": f"data dir {tiny_cifar.data_dir}"}
    cached = cache_root / "cifar10" / "cifar-10-binary.tar.gz"
    assert cached.read_bytes() == tiny_cifar.archive.read_bytes()
    assert fetch_dataset("cifar10", quiet=True) == {
        "cifar-10-binary.tar.gz": "cache (already present)"
    }
    assert [(s.ok, s.detail) for s in verify_dataset("cifar10")] == [(True, "ok")]
    cached.write_bytes(cached.read_bytes()[:-1])
    [status] = verify_dataset("cifar10")
    assert not status.ok and "SHA-256 is" in status.detail


def test_fetch_does_not_cache_an_archive_that_is_not_canonical(
    tiny_cifar, cache_root, monkeypatch, capsys
):
    write_tar(tiny_cifar.archive, tiny_cifar.entries()[:-1])  # not the pinned bytes
    served = fetch_dataset("cifar10", data_dir=tiny_cifar.data_dir, quiet=True)
    assert served == {"cifar-10-binary.tar.gz": f"mirror {tiny_cifar.spec.mirrors[0]}"}
    assert "--data-dir: " in capsys.readouterr().err  # said, then the mirror served
    cached = cache_root / "cifar10" / "cifar-10-binary.tar.gz"
    assert sha256(cached) == tiny_cifar.spec.sha256
    cached.unlink()
    cached.parent.rmdir()
    no_mirrors(monkeypatch, tiny_cifar)
    with pytest.raises(SourceError, match="could not get cifar10"):
        fetch_dataset("cifar10", data_dir=tiny_cifar.data_dir, quiet=True)
    assert not cached.parent.exists()  # the copy that failed its digest left no folder


def test_verify_an_extracted_folder_says_it_cannot(tiny_cifar):
    [status] = verify_dataset("cifar10", data_dir=tiny_cifar.extracted_dir)
    assert not status.ok and "no digest of its files is published" in status.detail


def test_the_data_command_handles_cifar10(tiny_cifar, cache_root, capsys, monkeypatch):
    no_mirrors(monkeypatch, tiny_cifar)
    assert main(["data", "info", "cifar10"]) == 1
    assert "not fetched" in capsys.readouterr().out
    assert main(["data", "fetch", "cifar10", "-q", "--data-dir", str(tiny_cifar.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "cifar-10-binary.tar.gz" in out and f"<- data dir {tiny_cifar.data_dir}" in out
    assert main(["data", "verify", "cifar10"]) == 0
    assert "cifar-10-binary.tar.gz     ok" in capsys.readouterr().out
    assert main(["data", "info", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "train: 13 images 3x32x32, uint8" in out and "test: 4 images 3x32x32" in out
    counts = np.bincount(tiny_cifar.test[1], minlength=10)
    assert f"airplane: {counts[0]}, automobile: {counts[1]}," in out
