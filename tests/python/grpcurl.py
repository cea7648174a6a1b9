"""A small stand-in for grpcurl that learns the API through server reflection.

    python3 tests/python/grpcurl.py [-plaintext] ADDRESS list [SERVICE]
    python3 tests/python/grpcurl.py [-plaintext] [-d JSON] ADDRESS package.Service/Method

It takes the grpcurl arguments README.md uses, so tests/examples.rs can run
the README's commands as written where grpcurl itself is not installed. Like
grpcurl it reads no .proto file: every descriptor comes from the server.
`list` prints service names (or a service's methods), one per line; a call
parses -d as protobuf JSON (an unknown field is an error), sends it, and
prints each response as JSON. On an error it prints the gRPC status to
stderr and exits with 64 + the status code, as grpcurl does.
"""
import argparse
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

# grpcurl asks grpc.reflection.v1 (rung serves it and v1alpha), while
# grpcio-reflection's client speaks only v1alpha. The two versions' messages
# are the same on the wire (same fields, same numbers), so the v1alpha
# message classes are used unchanged and only the method path is v1's: the
# README's commands are checked against the version grpcurl uses.
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


class _ReflectionV1Stub:
    """What ProtoReflectionDescriptorDatabase calls, bound to v1's path."""

    def __init__(self, channel):
        self.ServerReflectionInfo = channel.stream_stream(
            REFLECTION_V1,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )


def reflection_database(channel):
    """grpcio-reflection's descriptor database, asking the server over v1."""
    database = ProtoReflectionDescriptorDatabase(channel)
    # The database keeps its stub in `_stub` (grpcio-reflection 1.85, pinned
    # in examples/requirements.txt); fail loudly if a new release moves it.
    assert hasattr(database, "_stub"), "grpcio-reflection changed its database"
    database._stub = _ReflectionV1Stub(channel)
    return database


def parse_args(argv):
    # Go's flag package, which grpcurl uses, takes -flag and --flag alike.
    parser = argparse.ArgumentParser(prog="grpcurl", description=__doc__.split("\n")[0])
    parser.add_argument("-plaintext", "--plaintext", action="store_true",
                        help="no TLS (otherwise TLS with the system's roots)")
    parser.add_argument("-d", "--d", dest="data", default=None,
                        help="the request as protobuf JSON (default: an empty message)")
    parser.add_argument("address", help="host:port")
    parser.add_argument("target", help="'list' or package.Service/Method")
    parser.add_argument("symbol", nargs="?", help="with 'list': the service to list")
    args = parser.parse_args(argv)
    if args.symbol is not None and args.target != "list":
        parser.error(f"unexpected argument after {args.target}: {args.symbol}")
    return args


def open_channel(args):
    if args.plaintext:
        return grpc.insecure_channel(args.address)
    return grpc.secure_channel(args.address, grpc.ssl_channel_credentials())


def list_services(database, pool, service):
    if service is None:
        names = sorted(database.get_services())
    else:
        names = [m.full_name for m in pool.FindServiceByName(service).methods]
    for name in names:
        print(name)


def call(channel, pool, target, data):
    # grpcurl accepts both "pkg.Service/Method" and "pkg.Service.Method".
    service_name, _, method_name = target.replace("/", ".").rpartition(".")
    service = pool.FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise KeyError(f"{service_name} has no method {method_name!r}")
    if method.client_streaming:
        sys.exit(f"grpcurl.py: {target} is client-streaming, which this stand-in does not send")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    # Like grpcurl: an unknown field in -d is an error, not silently dropped.
    request = json_format.Parse(data or "{}", request_class(), ignore_unknown_fields=False)

    path = f"/{service.full_name}/{method.name}"
    open_call = channel.unary_stream if method.server_streaming else channel.unary_unary
    stub = open_call(
        path,
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    responses = stub(request)
    # A server-streaming call yields its messages; a unary one is one message.
    for response in responses if method.server_streaming else [responses]:
        print(json_format.MessageToJson(response, indent=2))


def main(argv):
    args = parse_args(argv)
    with open_channel(args) as channel:
        database = reflection_database(channel)
        pool = descriptor_pool.DescriptorPool(database)
        try:
            if args.target == "list":
                list_services(database, pool, args.symbol)
            else:
                call(channel, pool, args.target, args.data)
        except grpc.RpcError as error:
            code = error.code()
            print(f"ERROR:\n  Code: {code.name}\n  Message: {error.details()}", file=sys.stderr)
            return 64 + code.value[0]
        except (KeyError, json_format.ParseError) as error:
            # KeyError: reflection does not know the service or method.
            print(f"grpcurl.py: {args.target}: {error.args[0]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
