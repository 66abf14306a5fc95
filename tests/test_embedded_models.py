"""The embedded models' assembly: parts concatenated in order, checked against size and sha256, written
atomically; a mismatch or a missing package is one ConfigError (the CLI prints one line, exit 2)."""

from __future__ import annotations

import hashlib

import pytest

from optimizer.errors import ConfigError
from optimizer.lm._embedded import QWEN_INSTRUCT, PartsModel, assemble_parts, embedded_model_path


class DirParts(PartsModel):
    """Parts read from a directory instead of installed packages."""

    def part_paths(self):
        return [self.package_dir / self.part.format(n) for n in range(1, self.parts + 1)]  # type: ignore[attr-defined]


def _spec(tmp_path, blobs, *, sha=None, size=None):
    d = tmp_path / "parts"
    d.mkdir(exist_ok=True)
    for n, b in enumerate(blobs, 1):
        (d / f"p{n}.bin").write_bytes(b)
    whole = b"".join(blobs)
    spec = DirParts(file="m.gguf", package="unused{}", part="p{}.bin", parts=len(blobs), pip="parts==1",
                    size=len(whole) if size is None else size,
                    sha256=hashlib.sha256(whole).hexdigest() if sha is None else sha)
    object.__setattr__(spec, "package_dir", d)
    return spec


def test_parts_are_concatenated_in_order_and_stamped(tmp_path):
    spec = _spec(tmp_path, [b"GGUF", b"-two-", b"three"])
    out = assemble_parts(spec, tmp_path / "models")
    assert out.read_bytes() == b"GGUF-two-three"
    assert (tmp_path / "models" / "m.gguf.sha256").read_text().strip() == spec.sha256
    (tmp_path / "parts" / "p2.bin").unlink()  # stamped: a second call does not read the parts again
    assert assemble_parts(spec, tmp_path / "models") == out


def test_a_hash_mismatch_is_one_config_error_and_leaves_no_file(tmp_path):
    spec = _spec(tmp_path, [b"GGUF", b"tampered"], sha="0" * 64)
    with pytest.raises(ConfigError) as exc:
        assemble_parts(spec, tmp_path / "models")
    line = str(exc.value)
    assert "does not match" in line and "pip install --force-reinstall parts==1" in line
    assert not any((tmp_path / "models").iterdir())  # neither the model nor a temporary file is left


def test_an_unknown_local_model_without_a_path_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not an embedded model"):
        embedded_model_path("llama-3-8b", cache_dir=tmp_path)


def test_a_missing_parts_package_names_the_pip_command(tmp_path):
    spec = PartsModel(file="x.gguf", package="no_such_pkg_{}", part="part0{}.bin", parts=2, pip="no-such==1",
                      size=1, sha256="0" * 64)
    with pytest.raises(ConfigError, match="no_such_pkg_1 is not installed"):
        assemble_parts(spec, tmp_path)


@pytest.mark.integration
def test_the_instruct_model_is_assembled_from_its_six_wheels_with_the_published_hash():
    from optimizer.lm._embedded import INSTRUCT_MODEL

    path = embedded_model_path(INSTRUCT_MODEL)
    assert path.stat().st_size == QWEN_INSTRUCT.size
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert path.with_name(path.name + ".sha256").read_text().strip() == QWEN_INSTRUCT.sha256
