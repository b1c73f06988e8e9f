"""Record the NVTX ranges a command pushes, the way a profiler sees them, without one.

Builds ``nvtx_recorder.c`` (beside this file) with the system C compiler
against the NVTX headers, runs the command with ``NVTX_INJECTION64_PATH``
pointing at it (as Nsight tools do), and prints the tree of ranges per
thread, with counts::

    python profiling/nvtx_recorder.py -- python -m cugn.demo
    python profiling/nvtx_recorder.py --domain cugn -- python train.py

The NVTX headers come from (first found): the ``nvtx`` package, the
``nvidia-nvtx`` wheel (``pip install nvidia-nvtx``), ``$CUDA_HOME``,
``$CUDA_PATH`` or ``/usr/local/cuda*``, then ``/usr/include``. The tests use
``build``, ``run`` and ``parse`` to check cugn's ranges.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nvtx_recorder.c")
HEADER = os.path.join("nvtx3", "nvToolsExt.h")


class RecorderUnavailable(RuntimeError):
    """No C compiler or no NVTX headers: the reason says which."""


def _package_dirs(name):
    try:
        module = __import__(name)
    except ImportError:
        return []
    return list(getattr(module, "__path__", []))


def header_candidates():
    """Directories that may hold ``nvtx3/nvToolsExt.h``, in the order they are tried."""
    candidates = []
    for package in ("nvtx", "nvidia"):
        for root in _package_dirs(package):
            candidates += sorted(os.path.dirname(os.path.dirname(path)) for path in
                                 glob.glob(os.path.join(root, "**", HEADER), recursive=True))
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            candidates.append(os.path.join(os.environ[variable], "include"))
    candidates += sorted(glob.glob("/usr/local/cuda*/include"), reverse=True)
    candidates += [sysconfig.get_config_var("INCLUDEDIR") or "/usr/include", "/usr/include"]
    return candidates


def find_headers():
    """The include directory holding ``nvtx3/nvToolsExt.h``."""
    for candidate in header_candidates():
        if os.path.isfile(os.path.join(candidate, HEADER)):
            return candidate
    raise RecorderUnavailable(
        "no NVTX headers found (nvtx3/nvToolsExt.h): pip install nvidia-nvtx, or set CUDA_HOME"
    )


def find_compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise RecorderUnavailable("no C compiler found (tried $CC, cc, gcc, clang)")


def build(directory):
    """Compile the recorder into ``directory``; return the shared library's path."""
    library = os.path.join(directory, "libcugn_nvtx_recorder.so")
    command = [find_compiler(), "-shared", "-fPIC", "-O2", "-I", find_headers(), SOURCE,
               "-o", library, "-lpthread"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the NVTX recorder failed:\n{' '.join(command)}\n"
                           f"{result.stdout}{result.stderr}")
    return library


def run(command, library, record_path, env=None, cwd=None, check=True):
    """Run ``command`` with the recorder injected; return the CompletedProcess."""
    env = dict(os.environ if env is None else env)
    env["NVTX_INJECTION64_PATH"] = library
    env["CUGN_NVTX_RECORD"] = record_path
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{command} exited with {result.returncode}:\n"
                           f"{result.stdout}{result.stderr}")
    return result


@dataclass
class Range:
    name: str
    domain: str
    category: str
    thread: int
    children: list = field(default_factory=list)

    def walk(self):
        """This range and every range inside it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class Recording:
    domains: list      # domain names in creation order
    roots: list        # top-level Ranges, in push order, all threads
    unbalanced: list   # (thread, domain) with pops but no push, or pushes never popped

    def ranges(self, domain=None):
        return [r for root in self.roots for r in root.walk()
                if domain is None or r.domain == domain]


def parse(path):
    """Read the recorder's file into range trees: NVTX ranges nest per thread, so a
    range's parent is the innermost range open on its thread when it was pushed."""
    domains, categories = {"0": "<default>"}, {}
    open_ranges, roots, unbalanced = {}, [], []  # open_ranges: thread -> [Range, ...]
    with open(path) as lines:
        for line in lines:
            kind, *fields = line.rstrip("\n").split("\t")
            if kind == "domain":
                domains[fields[0]] = fields[1]
            elif kind == "category":
                categories[(fields[0], fields[1])] = fields[2]
            elif kind == "push":
                thread, domain, category, message = fields
                stack = open_ranges.setdefault(thread, [])
                node = Range(message, domains.get(domain, domain),
                             categories.get((domain, category), category), int(thread))
                (stack[-1].children if stack else roots).append(node)
                stack.append(node)
            elif kind == "pop":
                thread, domain = fields
                name = domains.get(domain, domain)
                stack = open_ranges.get(thread, [])
                # A pop ends the innermost open range of its domain on that thread.
                for position in reversed(range(len(stack))):
                    if stack[position].domain == name:
                        del stack[position]
                        break
                else:
                    unbalanced.append((int(thread), name))
    unbalanced += [(r.thread, r.domain) for stack in open_ranges.values() for r in stack]
    names = [name for key, name in domains.items() if key != "0"]
    return Recording(names, roots, unbalanced)


def summary(recording, domain=None):
    """Text tree of ranges with counts, same-named siblings merged."""
    lines = []

    def merge(ranges):
        merged = {}
        for r in ranges:
            key = (r.name, r.category)
            count, children = merged.get(key, (0, []))
            merged[key] = (count + 1, children + r.children)
        return merged

    def emit(ranges, depth):
        for (name, category), (count, children) in merge(ranges).items():
            lines.append(f"{'  ' * depth}{name}  [{category}]  x{count}")
            emit(children, depth + 1)

    roots = [r for r in recording.roots if domain is None or r.domain == domain]
    emit(roots, 0)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", help="show only this NVTX domain's top-level ranges")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        with tempfile.TemporaryDirectory() as directory:
            library = build(directory)
            record_path = os.path.join(directory, "ranges.tsv")
            result = run(command, library, record_path, check=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            if os.path.exists(record_path):
                print(summary(parse(record_path), args.domain))
            return result.returncode
    except RecorderUnavailable as error:
        sys.exit(f"nvtx_recorder: {error}")


if __name__ == "__main__":
    sys.exit(main())
