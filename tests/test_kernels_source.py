"""The CUDA source as the loader assembles it, and as the package ships it: the files
of ``cugn/kernels/cuda`` are inlined into one text, with ``#line`` markers that
point each of its lines back to its file, and every one of them is package data."""

import fnmatch
import re
from pathlib import Path

import pytest

from cugn.kernels import cuda_loader

ROOT = Path(__file__).resolve().parent.parent
LINE_MARKER = re.compile(r'^#line (\d+) "([\w.]+)"$')


def source_files():
    return {path.name: path.read_text().split("\n")
            for path in cuda_loader.SOURCE_DIRECTORY.iterdir() if path.is_file()}


def included_names():
    main = (cuda_loader.SOURCE_DIRECTORY / cuda_loader.SOURCE_NAME).read_text()
    return re.findall(r'^#include "([\w.]+)"', main, re.MULTILINE)


def test_every_file_of_the_folder_is_inlined_once():
    text = cuda_loader.source()
    names = included_names()
    assert sorted([cuda_loader.SOURCE_NAME, *names]) == sorted(source_files())
    markers = [m[2] for m in map(LINE_MARKER.match, text.split("\n")) if m and m[1] == "1"]
    assert markers == names  # once each, in the order group_norm.cu includes them
    assert not re.search(r'^#include "', text, re.MULTILINE)


def test_line_markers_point_every_line_back_to_its_file():
    # What a compiler reports as file:line is the line it says: follow the markers
    # (each names the line that comes after it) through the whole text.
    files = source_files()
    name, number = cuda_loader.SOURCE_NAME, 1
    checked = set()
    for line in cuda_loader.source().split("\n"):
        if marker := LINE_MARKER.match(line):
            number, name = int(marker[1]), marker[2]
            continue
        assert files[name][number - 1] == line, f"{name}:{number}"
        checked.add(name)
        number += 1
    assert checked == set(files)


def test_the_package_data_ships_every_kernel_source():
    # CI tests the checkout, not the wheel: a source file the globs miss would only
    # fail once installed.
    tomllib = pytest.importorskip("tomllib", reason="the TOML reader of Python 3.11 and later")
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    # (package, the folder of its data files)
    for package, data in (("cugn.kernels", "cuda"), ("cugn.kernels.cuda_on_cpu", ".")):
        folder = ROOT.joinpath(*package.split("."))
        for path in (folder / data).iterdir():
            if path.is_file() and path.suffix != ".py":
                relative = path.relative_to(folder).as_posix()
                assert any(fnmatch.fnmatch(relative, glob) for glob in package_data[package]), (
                    f"{package}: {relative}")
