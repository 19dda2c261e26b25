"""The CRI v1 API (package ``runtime.v1``): proto and generated gRPC stubs.

``api.proto`` is a field-for-field transcription of the Kubernetes 1.29
``pkg/apis/runtime/v1/api.proto`` (k8s.io/cri-api v0.29.0); the kubelet and
crictl are compiled against those names and numbers, so they must never change.

``api_pb2`` (messages and enums, with ``api_pb2.pyi`` for type checkers) and
``api_pb2_grpc`` (servicers, stubs, ``add_*_to_server``) are generated. Never
edit them by hand; after changing the proto, regenerate them with::

    python hack/genproto.py

which needs the pinned ``grpcio-tools`` of the ``test`` extra.
``python hack/genproto.py --check`` (also run by the unit tests) fails when the
committed stubs differ from fresh output.

Proto messages stay at the gRPC boundary: server modules convert them to
crio's own dataclasses.
"""

from crio.api import api_pb2, api_pb2_grpc

__all__ = ["api_pb2", "api_pb2_grpc"]
