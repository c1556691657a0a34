"""fsalign.util: a final path holds the old file or the complete new one, never a part."""
import pytest

from fsalign.util import atomic_open, atomic_path, temporary_name


def test_atomic_open_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_open(target, "w") as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half of the second")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"  # the old file survives
    assert not temporary_name(target).exists() and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    target = tmp_path / "x.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"\x00\x01")
        assert not target.exists()  # nothing at the final path until the block ends
    assert target.read_bytes() == b"\x00\x01"
