"""Write a protoset (FileDescriptorSet) of every tiket service, grpc.health.v1 and the
google.rpc error details, for grpcurl through a proxy that does not route gRPC reflection
(deploy/envoy/envoy.yaml):

    python -m deploy.tools.protoset build/tiket.protoset
    grpcurl -plaintext -protoset build/tiket.protoset … 127.0.0.1:8080 METHOD
"""

from __future__ import annotations

import argparse
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from services import registry


def protoset() -> descriptor_pb2.FileDescriptorSet:
    """The files of every service in services/registry.py, of grpc.health.v1 and of the
    google.rpc details errors carry (BadRequest, ErrorInfo, ResourceInfo …: without them
    grpcurl prints an error's details as undecoded bytes), each after the files it imports."""
    files: dict[str, FileDescriptor] = {}

    def add(file: FileDescriptor) -> None:
        if file.name not in files:
            for dependency in file.dependencies:
                add(dependency)
            files[file.name] = file

    add(health_pb2.DESCRIPTOR)
    add(error_details_pb2.DESCRIPTOR)
    for name in registry.SERVICES:
        for service in registry.definition(name).services:
            add(service.file)
    result = descriptor_pb2.FileDescriptorSet()
    for file in files.values():
        file.CopyToProto(result.file.add())
    return result


def write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(protoset().SerializeToString())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the file to write, e.g. build/tiket.protoset")
    path = parser.parse_args(argv).path
    write(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
