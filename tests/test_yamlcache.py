"""opslab.yamlcache: the JSON copy is used only while it is exactly the file's document."""

import json
import os
from pathlib import Path

import pytest

from opslab import yamlcache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(directory))
    return directory / "opslab" / "yaml"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts PyYAML was asked to parse."""
    seen: list[str] = []
    real = yamlcache.parse

    def counting(text: str) -> object:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(yamlcache, "parse", counting)
    return seen


def test_the_second_load_reads_the_copy(tmp_path: Path, cache: Path, parses: list[str]) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("branches:\n  remote: /srv/puppet\n  include: [a, b]\n")
    first = yamlcache.load(str(path))
    assert yamlcache.load(str(path)) == first == {"branches": {"remote": "/srv/puppet",
                                                               "include": ["a", "b"]}}
    assert len(parses) == 1
    (copy,) = cache.iterdir()
    assert copy.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700


def test_a_changed_file_is_parsed_again(tmp_path: Path, cache: Path, parses: list[str]) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("a: 1\n")
    assert yamlcache.load(str(path)) == {"a": 1}
    status = path.stat()
    path.write_text("a: 2\n")  # same size; its times put back as they were
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert yamlcache.load(str(path)) == {"a": 2}  # the change time still differs
    assert len(parses) == 2


def test_a_copy_that_is_not_ours_alone_is_ignored(tmp_path: Path, cache: Path,
                                                  parses: list[str]) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("a: 1\n")
    yamlcache.load(str(path))
    (copy,) = cache.iterdir()
    record = json.loads(copy.read_text())
    record["document"] = {"a": "planted"}
    copy.write_text(json.dumps(record))
    copy.chmod(0o622)  # writable by others: anyone could have planted it
    assert yamlcache.load(str(path)) == {"a": 1}
    if os.geteuid() == 0:
        copy.write_text(json.dumps(record))
        copy.chmod(0o600)
        os.chown(copy, 65534, -1)  # another user's
        assert yamlcache.load(str(path)) == {"a": 1}
    copy.unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps(record))
    copy.symlink_to(tmp_path / "elsewhere.json")
    assert yamlcache.load(str(path)) == {"a": 1}
    assert len(parses) == (4 if os.geteuid() == 0 else 3)  # none of the copies was read


@pytest.mark.parametrize("damage", ["", "{", "[1]", '{"identity": 5}', "\x00\xff"])
def test_a_damaged_copy_means_parsing(tmp_path: Path, cache: Path, damage: str) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("a: 1\n")
    yamlcache.load(str(path))
    (copy,) = cache.iterdir()
    copy.write_text(damage, errors="surrogateescape")
    assert yamlcache.load(str(path)) == {"a": 1}
    assert json.loads(copy.read_text())["document"] == {"a": 1}  # and the copy is mended


@pytest.mark.parametrize("text", ["when: 2026-11-30\n", "1: one\n", "x: .nan\n", "s: !!set {a}\n"])
def test_documents_json_cannot_hold_are_not_copied(tmp_path: Path, cache: Path,
                                                   text: str) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text(text)
    assert repr(yamlcache.load(str(path))) == repr(yamlcache.parse(text))  # nan != nan
    assert not cache.exists() or not any(cache.iterdir())


def test_no_usable_cache_directory_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               parses: list[str]) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("a: 1\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # a file: nothing can go below it
    assert yamlcache.load(str(path)) == {"a": 1}
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as XDG says; no HOME either
    monkeypatch.delenv("HOME")
    assert yamlcache.load(str(path)) == {"a": 1}
    assert not Path("relative").exists()
    assert len(parses) == 2


def test_errors_are_the_files(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(FileNotFoundError):
        yamlcache.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(yamlcache.YamlError, match="line"):
        yamlcache.load(str(bad))
    assert not cache.exists() or not any(cache.iterdir())
