"""Generated gRPC/protobuf stubs for proto/externalscaler.proto (KEDA's external scaler).

Do not edit the `externalscaler_pb2*` modules by hand: regenerate them with
`python proto/generate.py`, which runs grpc_tools.protoc and rewrites the one top-level
`import externalscaler_pb2` of the `_grpc` module into a package-relative import.
The generated code checks the installed grpcio (>= 1.85.1) and protobuf (>= 7.35.1, < 8)
versions at import time.
"""
