"""Calls a running rung server from Python.

    pip install grpcio grpcio-tools
    python3 examples/score.py [host:port]

Generates the client from proto/ into a temporary folder, then scores one
visitor and prints the answer.
"""
import pathlib
import sys
import tempfile

from grpc_tools import protoc
import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
out = tempfile.mkdtemp()
include = pathlib.Path(protoc.__file__).parent / "_proto"
if protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                f"--grpc_python_out={out}", "rung/v1/intent.proto"]) != 0:
    sys.exit("could not generate the client")
sys.path.insert(0, out)

from rung.v1 import intent_pb2 as pb, intent_pb2_grpc as rpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402


def at(text):
    t = Timestamp()
    t.FromJsonString(text)
    return t


target = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
with grpc.insecure_channel(target) as channel:
    stub = rpc.IntentServiceStub(channel)
    answer = stub.Score(pb.ScoreRequest(
        visitor_id="v-42",
        as_of=at("2026-01-01T12:00:00Z"),
        events=[
            pb.Event(type="view_item", time=at("2026-01-01T11:50:00Z"), item_id="sku-1"),
            pb.Event(type="Product Added", time=at("2026-01-01T11:52:00Z"), item_id="sku-1"),
            pb.Event(type="begin_checkout", time=at("2026-01-01T11:55:00Z")),
        ],
    ))
    print(answer)
