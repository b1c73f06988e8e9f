"""python -m cugn.kernels [--arch sm_80 --arch sm_90 ...]

Compiles every CUDA kernel instantiation cugn can launch through NVRTC (no GPU
needed), prints registers and spills per kernel, and exits non-zero on any
compile error or any spill.
"""

import argparse
import sys

from . import compile_check, cuda_loader


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cugn.kernels", description=__doc__.split("\n\n")[1])
    parser.add_argument("--arch", action="append", metavar="sm_XX",
                        help=f"target architecture, repeatable (default: {' '.join(cuda_loader.ARCHITECTURES)})")
    args = parser.parse_args(argv)
    architectures = tuple(args.arch or cuda_loader.ARCHITECTURES)
    try:
        reports = compile_check.compile_all(architectures)
    except compile_check.CompileError as error:
        print(f"compile error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:
        print(f"NVRTC's Python binding is missing ({error}): pip install 'cugn[cuda13]'",
              file=sys.stderr)
        return 1
    for report in reports:
        print(report)
    spilled = [r for r in reports if r.spills]
    print(f"{len(reports)} kernel instantiations over {len(cuda_loader.configurations())} "
          f"configurations for {', '.join(architectures)}: "
          f"{len(spilled)} with spills, max registers {max(r.registers for r in reports)}")
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
