#!/usr/bin/env bash
# Regenerates dynamo_mono_kserve/proto/kserve_pb2.py and kserve_pb2_grpc.py from kserve.proto (checked in, so
# installing the plugin needs no code generator). Uses grpcio-tools 1.74.0 in a throw-away venv: its protoc (protobuf 6.31)
# writes gencode that the protobuf runtime 6.31+ and 7.x loads (tritonclient[grpc] pins protobuf<7), and keeps the tool out of the
# serving environment.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${GEN_VENV:-/tmp/dynamo-mono-grpc-tools}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q 'grpcio-tools==1.74.0'
"$VENV/bin/python" -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. dynamo_mono_kserve/proto/kserve.proto
