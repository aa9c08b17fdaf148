"""CPU by layer from a py-spy profile: which share of a service's samples each layer takes.

    py-spy record -p <pid> -r 100 -d 20 -f raw -o journey.txt   # while a benchmark runs
    .venv/bin/python -m bench.profile_layers journey.txt [--top 25] [--cpu-ms 3.9]

Each sample is charged to one layer: the innermost frame whose file belongs to a layer
(so psycopg called from our handler counts as psycopg, our handler's own lines as "our
code"). C code shows no Python frame of its own: a sample whose innermost frame is the
event loop's (uvloop, grpc's Cython server code, protobuf's C parsing under it) or the bare
thread grpc polls its completion queue in is "event loop / grpc C core". Then the top
frames by self and by inclusive share, as a flame graph's widest boxes. `--cpu-ms`: the
process's CPU per operation (from the benchmark's CPU line, same run), to print each
layer's share of it in milliseconds.

py-spy's own-frame shares of C calls are rough (its non-blocking samples can land on the
Python frame that called into C): `perf record` on the process says which shared objects
the time is really spent in.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

# (layer, pattern of a frame's "function (file:line)"): the first match, innermost first.
LAYERS: tuple[tuple[str, str], ...] = (
    ("psycopg", r"\((psycopg|psycopg_pool)/"),
    ("redis", r"\(redis/"),
    ("AMQP publish (aio_pika/aiormq/pamqp)", r"\((aio_pika|aiormq|pamqp)/"),
    ("protobuf", r"\(google/protobuf/"),
    ("prometheus", r"\(prometheus_client/"),
    ("logging", r"\((logging/|libs/jsonlog)"),
    ("tracing (opentelemetry)", r"\((opentelemetry/|libs/tracing)"),
    ("auth (token verification)", r"\((jwt/|cryptography/|libs/auth/)"),
    ("interceptor (access, errors, metrics)", r"\(libs/server/"),
    ("outbox relay", r"\(libs/events/"),
    ("our code (services, libs)", r"\((services|libs)/"),
    ("grpc.aio (Python side)", r"\(grpc/"),
    ("asyncio / uvloop", r"\((asyncio/|uvloop/)"),
)
COMPILED = tuple((name, re.compile(pattern)) for name, pattern in LAYERS)
OTHER = "other Python"
# The frames every sample of a thread starts with (interpreter start, `tiket serve`, the
# loop, a thread's bootstrap): left out of the inclusive list, where they would top it.
OUTER = re.compile(
    r"^(<module>|_run_code|_run_module_as_main|main|_serve|run|Runner\.run|"
    r"Thread\._bootstrap\w*|Thread\.run) \((<frozen runpy>|cli/main|libs/server/runtime|"
    r"uvloop/|asyncio/runners|threading)"
)
LOOP_C = "event loop / grpc C core"


def samples(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    """(frames outermost first, count) of each line of py-spy's raw (collapsed) output."""
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def layer_of(frames: Sequence[str]) -> str:
    innermost = frames[-1]
    if re.search(r"\((uvloop/__init__|asyncio/runners)", innermost) or "cygrpc" in innermost:
        return LOOP_C
    if len(frames) <= 3 and innermost.startswith("Thread.run (threading"):
        return LOOP_C  # grpc's completion-queue poller: a thread running Cython only
    for frame in reversed(frames):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return OTHER


def frame_name(frame: str) -> str:
    """ "function (file:line)" without the line: one box per function."""
    return re.sub(r":\d+\)$", ")", frame)


def summarize(path: Path, top: int, cpu_ms: float | None = None) -> str:
    layers: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in samples(path.read_text().splitlines()):
        total += count
        layers[layer_of(frames)] += count
        own[frame_name(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return f"{path}: no samples"

    def share(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    def ms(n: int) -> str:
        return "" if cpu_ms is None else f"  {cpu_ms * n / total:6.2f} ms"

    out = [f"{path}: {total} samples", "", "layer (innermost matching frame)        share"]
    out += [f"  {name:<40} {share(n)}{ms(n)}" for name, n in layers.most_common()]
    out += ["", f"top {top} frames by own samples"]
    out += [f"  {share(n)}  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} frames by inclusive samples (the loop's and threads' own left out)"]
    busy = [(name, n) for name, n in inclusive.most_common() if not OUTER.match(name)]
    out += [f"  {share(n)}  {name}" for name, n in busy[:top]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_layers", description=__doc__)
    parser.add_argument("profiles", nargs="+", type=Path, help="py-spy raw output files")
    parser.add_argument("--top", type=int, default=25, help="frames listed (default 25)")
    parser.add_argument(
        "--cpu-ms", type=float, help="the process's CPU per operation, to print ms per layer"
    )
    args = parser.parse_args(argv)
    print("\n\n".join(summarize(p, args.top, args.cpu_ms) for p in args.profiles))


if __name__ == "__main__":
    main()
