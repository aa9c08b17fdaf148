"""Generate Python protobuf and gRPC code from protos/ into gen/.

`python -m libs.proto.generate` writes the code; `--check` regenerates into a scratch
directory and fails when gen/ differs (stale or hand-edited generated code).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"


def _include_paths() -> list[str]:
    import google.type  # googleapis-common-protos ships the .proto files beside the code
    import grpc_tools

    googleapis = Path(google.type.__path__[0]).parent.parent
    well_known = resources.files(grpc_tools) / "_proto"
    return [str(PROTO_ROOT), str(well_known), str(googleapis)]


def generate(out: Path) -> None:
    """Compile every .proto under protos/ into `out`, with __init__.py in each package."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", *(f"-I{p}" for p in _include_paths())]
    args += [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the messages above")
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        while package != out:
            init = package / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated package."""\n')
            package = package.parent


def _generated_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
    }


def check() -> int:
    """Return 0 when gen/ matches what protos/ generates now, else print the drift."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        (fresh / "tiket" / "__init__.py").write_text(
            (GEN_ROOT / "tiket" / "__init__.py").read_text()
        )
        want, have = _generated_files(fresh), _generated_files(GEN_ROOT)
        stale = sorted(
            f for f in want & have if not filecmp.cmp(fresh / f, GEN_ROOT / f, shallow=False)
        )
        problems = [f"missing: gen/{f}" for f in sorted(want - have)]
        problems += [f"left over: gen/{f}" for f in sorted(have - want)]
        problems += [f"stale: gen/{f}" for f in stale]
    if problems:
        print("generated code is out of date; run `make proto`:", *problems, sep="\n  ")
        return 1
    print(f"generated code is up to date ({len(want)} files)")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    if parser.parse_args().check:
        sys.exit(check())
    generate(GEN_ROOT)


if __name__ == "__main__":
    main()
